"""What one fleet emulator pass costs at N instances: through the API vs in-process.

    .venv/bin/python benchmarks/emulator_reconcile.py [--instances 300] [--passes 5]

Starts moto and the like-AWS layer as `cloudjhub demo --like-aws` does, launches N
instances and waits until they visibly run. Two emulators then look at the same
fleet, each already holding a booted machine per instance (no sshd is started:
a steady-state pass changes nothing): one reads it with DescribeInstances through
the layer (the path kept for an outside --aws-endpoint), the other from moto's
backend in this process (the embedded moto's). It prints each one's CPU seconds
per pass (time.process_time, so the moto server's and the proxy's threads count
too; the median of --passes) and their ratio, side by side. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from cloudjhub.aws.client import RETRY_CONFIG
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.local import motoserver
from cloudjhub.local.awslike.proxy import AwsLikeProxy
from cloudjhub.local.awslike.settings import Behaviour
from cloudjhub.local.emulator import FleetEmulator, Machine
from cloudjhub.local.fleet_states import moto_source

VPC_CIDR = "127.171.0.0/16"
PRIVATE_CIDR = "127.171.0.0/18"
REGION = "us-east-1"


def pass_seconds(fleet: FleetEmulator, passes: int) -> float:
    """The median CPU seconds of one reconcile pass."""
    fleet.reconcile()  # warm up (imports, connections)
    spent = []
    for _ in range(passes):
        began = time.process_time()
        fleet.reconcile()
        spent.append(time.process_time() - began)
    return statistics.median(spent)


def booted(fleet: FleetEmulator, instances: dict[str, str]) -> FleetEmulator:
    """The emulator as it is once every machine booted (none is, really)."""
    for instance_id, ip in instances.items():
        fleet.machines[instance_id] = Machine(
            instance_id, fleet.root_of(instance_id), ip, boot=motoserver.boot_count(instance_id)
        )
    return fleet


def run(n: int, passes: int, state: Path) -> None:
    os.environ.update({**motoserver.LOCAL_CREDENTIALS, **motoserver.VALIDATION_FLAGS})
    moto = motoserver.LocalEc2()
    upstream = moto.start()
    os.environ.update(moto.credentials)
    proxy = AwsLikeProxy(upstream, REGION, Behaviour(time_scale=0.01))
    proxy.start()
    try:
        ec2 = boto3.session.Session().client(
            "ec2", region_name=REGION, endpoint_url=proxy.url, config=RETRY_CONFIG
        )
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=PRIVATE_CIDR)["Subnet"]["SubnetId"]
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        reply = ec2.run_instances(
            ImageId=ami, MinCount=n, MaxCount=n, SubnetId=subnet, InstanceType="t3.micro"
        )
        instances = {i["InstanceId"]: i["PrivateIpAddress"] for i in reply["Instances"]}
        time.sleep(1)  # past `pending` (time scale 0.01)
        machines = LocalCloudEc2.connect("emulator-reconcile", REGION, proxy.internal_url)
        by_api = booted(FleetEmulator(machines, state, 2222, publish_console=False), instances)
        in_process = booted(
            FleetEmulator(
                machines,
                state,
                2222,
                publish_console=False,
                states=moto_source(REGION, proxy.layer.lifecycle.visible),
            ),
            instances,
        )
        api = pass_seconds(by_api, passes)
        local = pass_seconds(in_process, passes)
        assert len(by_api.machines) == len(in_process.machines) == n, "a machine was halted"
        print(f"instances: {n}; CPU seconds of one reconcile pass (median of {passes}):")
        print(f"  DescribeInstances through the like-AWS layer: {api:.4f}")
        print(f"  moto's backend read in-process:               {local:.4f}")
        print(f"  ratio (API / in-process):                     {api / local:.1f}x")
        # The emulator waits its interval (0.5 s) after each pass.
        busy = [t / (t + 0.5) for t in (api, local)]
        print(f"  share of a core, 0.5 s between passes: {busy[0]:.0%} vs {busy[1]:.1%}")
        ec2.terminate_instances(InstanceIds=list(instances))
    finally:
        proxy.stop()
        moto.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudjhub-emulator-reconcile-") as tmp:
        run(args.instances, args.passes, Path(tmp))


if __name__ == "__main__":
    main()
