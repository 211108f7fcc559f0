"""What poll() costs for a class: the shared fleet cache against per-user lookups.

Runs moto in-process with N workers of one cluster, then measures, side by
side in one run, N concurrent status checks done two ways:
  naive:  one DescribeInstances per user (what a per-user poll would do)
  fleet:  cloudjhub.fleet.Fleet.refresh() shared by all N callers
and prints the EC2 calls and wall time of each and their ratio.

    .venv/bin/python benchmarks/poll_cost.py --users 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from moto import mock_aws
from prometheus_client import REGISTRY

from cloudjhub.aws.hub import WorkerSpec, launch_token
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.executor import blocking
from cloudjhub.fleet import Fleet


def setup(users: int) -> LocalCloudEc2:
    ec2 = LocalCloudEc2.connect("bench", "us-east-1")
    vpc = ec2.ensure_vpc("10.0.0.0/16", {"Name": "bench"})
    subnet = ec2.ensure_subnet(vpc, "10.0.0.0/20", {"Name": "bench"})
    image = ec2.public_images()[0]["ImageId"]
    spec = WorkerSpec(image, "t3.micro", subnet, (), "", 8)
    for n in range(users):
        user = f"user{n}"
        ec2.launch_worker(user, spec, launch_token("bench", user, None))
    return ec2


async def naive(ec2: LocalCloudEc2, users: int) -> None:
    await asyncio.gather(*(blocking(ec2.describe_workers, f"user{n}") for n in range(users)))


async def shared(ec2: LocalCloudEc2, users: int) -> None:
    fleet = Fleet(ec2, max_age=60)
    await asyncio.gather(*(fleet.refresh() for _ in range(users)))
    assert all(fleet.for_user(f"user{n}") for n in range(users))


def measure(ec2: LocalCloudEc2, fn: object, users: int) -> tuple[int, float]:
    before = describes()
    started = time.perf_counter()
    asyncio.run(fn(ec2, users))  # type: ignore[operator]
    return int(describes() - before), time.perf_counter() - started


def describes() -> float:
    """DescribeInstances calls so far, from the hub's own metric."""
    labels = {"action": "describe_instances", "outcome": "ok"}
    return REGISTRY.get_sample_value("cloudjhub_ec2_api_calls_total", labels) or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "bench"
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        ec2 = setup(args.users)
        naive_calls, naive_time = measure(ec2, naive, args.users)
        fleet_calls, fleet_time = measure(ec2, shared, args.users)
    print(f"users: {args.users}")
    print(f"naive per-user: {naive_calls} DescribeInstances, {naive_time:.2f}s")
    print(f"shared fleet:   {fleet_calls} DescribeInstances, {fleet_time:.2f}s")
    print(
        f"ratio: {naive_calls / fleet_calls:.0f}x fewer calls, {naive_time / fleet_time:.1f}x faster"
    )


if __name__ == "__main__":
    main()
