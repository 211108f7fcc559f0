"""Issue 10's check without JupyterHub: does every instance of a big launch show its
SSH host key on its console once booted?

    flock /tmp/cloudjhub-system-tests.lock .venv/bin/python benchmarks/boot_storm.py \\
        [--instances 300] [--refills 5x10] [--time-scale 0.2]

Starts the local cloud as `cloudjhub demo --like-aws` does (moto, the AWS behaviour
layer, the fleet emulator with a real sshd per instance, host keys printed once per
instance), launches N instances in one RunInstances and, while they boot, a few
smaller launches (a warm-pool keeper's refills). Then it waits until every instance
is visibly running and its machine booted, and reads each console (GetConsoleOutput,
Latest) as the hub does. It prints how many show no host key and how many machines
booted more than once (from the emulator's log), and exits 1 if any. Everything it
started is ended before it returns.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from cloudjhub.aws.client import RETRY_CONFIG
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.local import motoserver
from cloudjhub.local.awslike.proxy import AwsLikeProxy
from cloudjhub.local.awslike.settings import Behaviour
from cloudjhub.local.emulator import FleetEmulator
from cloudjhub.local.emulator_log import LOG_NAME
from cloudjhub.remote import parse_console_host_keys

VPC_CIDR = "127.161.0.0/16"
PRIVATE_CIDR = "127.161.16.0/20"
SSH_PORT = 2222
REGION = "us-east-1"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def launch(ec2: Any, ami: str, subnet: str, count: int, out: list[str]) -> None:
    reply = ec2.run_instances(
        ImageId=ami, MinCount=count, MaxCount=count, SubnetId=subnet, InstanceType="t3.micro"
    )
    out.extend(i["InstanceId"] for i in reply["Instances"])


def running(ec2: Any) -> set[str]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["running"]}]
    )
    return {i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]}


def run(n: int, refills: tuple[int, int], time_scale: float, state: Path) -> int:
    os.environ.update({**motoserver.LOCAL_CREDENTIALS, **motoserver.VALIDATION_FLAGS})
    moto = motoserver.LocalEc2()
    upstream = moto.start()
    os.environ.update(moto.credentials)
    proxy = AwsLikeProxy(upstream, REGION, Behaviour(time_scale=time_scale))
    proxy.start()
    fleet: FleetEmulator | None = None
    ec2: Any = None
    ids: list[str] = []
    try:
        ec2 = boto3.session.Session().client(
            "ec2", region_name=REGION, endpoint_url=proxy.url, config=RETRY_CONFIG
        )
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=PRIVATE_CIDR)["Subnet"]["SubnetId"]
        images = ec2.describe_images(Owners=["amazon"])["Images"]
        ami = sorted(i["ImageId"] for i in images if i.get("Architecture") == "x86_64")[0]
        fleet = FleetEmulator(
            LocalCloudEc2.connect("boot-storm", REGION, proxy.internal_url),
            state,
            SSH_PORT,
            console=proxy.layer.console.write,
            host_keys_once=True,
            trusts_key=motoserver.trusts_key,
        )
        fleet.start()
        began = time.monotonic()
        say(f"launching {n} in one RunInstances, then {refills[0]} x {refills[1]} more")
        big = threading.Thread(target=launch, args=(ec2, ami, subnet, n, ids))
        big.start()
        for _ in range(refills[0]):
            time.sleep(1.0)
            launch(ec2, ami, subnet, refills[1], ids)
        big.join()
        total = n + refills[0] * refills[1]
        deadline = time.monotonic() + 600
        while True:
            up = running(ec2)
            booted = set(fleet.machines)
            if len(ids) == total and set(ids) <= up and set(ids) <= booted:
                break
            if time.monotonic() > deadline:
                say(f"not all up: {len(up)} running, {len(booted)} booted of {total}")
                break
            time.sleep(2)
        say(f"{total} running and booted after {time.monotonic() - began:.0f}s")
        keyless = [
            i
            for i in ids
            if not parse_console_host_keys(
                str(ec2.get_console_output(InstanceId=i, Latest=True).get("Output") or "")
            )
        ]
        log_file = state / LOG_NAME
        log = log_file.read_text() if log_file.exists() else ""  # (an emulator without one)
        boots = collections.Counter(re.findall(r"booted (i-[0-9a-f]+) ", log))
        twice = sorted(i for i, k in boots.items() if k > 1)
        say(f"consoles without a host key: {len(keyless)} of {total} {keyless[:5]}")
        say(f"machines booted more than once: {len(twice)} {twice[:5]}")
        return 1 if keyless or twice else 0
    finally:
        if ec2 is not None and ids:
            ec2.terminate_instances(InstanceIds=ids)
        if fleet is not None:
            fleet.stop()
        proxy.stop()
        moto.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--refills", default="5x10", help="COUNTxSIZE launches while booting")
    parser.add_argument("--time-scale", type=float, default=0.2)
    args = parser.parse_args()
    count, _, size = args.refills.partition("x")
    with tempfile.TemporaryDirectory(prefix="cloudjhub-boot-storm-") as tmp:
        return run(args.instances, (int(count), int(size)), args.time_scale, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
