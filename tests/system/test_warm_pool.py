"""The warm pool through the demo: `--warm-pool-size 1` fills it (a stopped worker with
no user), a first login claims that very worker, and the pool refills."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Demo, running_demo

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

VPC_CIDR = "127.213.0.0/16"


def pool(demo: Demo) -> list[dict[str, Any]]:
    reply = demo.ec2().describe_instances(
        Filters=[{"Name": "tag:cloudjhub:pool", "Values": ["ready"]}]
    )
    found = [i for r in reply["Reservations"] for i in r["Instances"]]
    return [
        i
        for i in found
        if i["State"]["Name"] not in ("shutting-down", "terminated")
        and "cloudjhub:user" not in {t["Key"] for t in i.get("Tags", [])}
    ]


def wait_for_pool(demo: Demo, state: str, not_ids: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = pool(demo)
        ids = [m["InstanceId"] for m in members if m["State"]["Name"] == state]
        if len(members) == 1 and ids and ids[0] not in not_ids:
            return str(ids[0])
        time.sleep(0.5)
    raise AssertionError(f"no {state} pool worker within {timeout:.0f}s: {pool(demo)}")


def test_first_login_claims_the_pool_worker_and_the_pool_refills(tmp_path: Path) -> None:
    with running_demo(tmp_path, 600, VPC_CIDR, "--warm-pool-size", "1") as demo:
        member = wait_for_pool(demo, "stopped", set())

        demo.start("alice")

        [mine] = demo.instances("alice")
        assert mine["InstanceId"] == member and mine["State"]["Name"] == "running"
        assert "cloudjhub:pool" not in {t["Key"] for t in mine["Tags"]}
        assert demo.request("GET", f"{demo.hub_url}user/alice/api/status").status_code == 200
        wait_for_pool(demo, "stopped", {member})
