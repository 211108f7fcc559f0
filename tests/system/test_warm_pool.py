"""The warm pool through the demo: `--warm-pool-size 1` fills it (a stopped worker with
no user), a first login claims that very worker, and the pool refills."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.system.conftest import Demo, running_demo

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

VPC_CIDR = "127.213.0.0/16"
SCHEDULE_VPC_CIDR = "127.231.0.0/16"


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


def test_a_schedule_window_makes_the_hubs_keeper_grow_the_pool(tmp_path: Path) -> None:
    """No pool size, but a window open now in Asia/Kolkata (UTC+05:30, so a wrong time
    zone would miss it) and one that closed half an hour ago: the hub's keeper grows
    the pool to the open window's size, and only to it. The clock is the real one; the
    unit tests inject theirs (test_pool_schedule.py, test_warm_pool_keeper.py)."""
    now = datetime.now(ZoneInfo("Asia/Kolkata")) - timedelta(minutes=1)
    closed = now - timedelta(minutes=30)
    schedule = [
        {"cron": f"{now.minute} {now.hour} * * *", "duration": 900, "size": 1},
        {"cron": f"{closed.minute} {closed.hour} * * *", "duration": 60, "size": 3},
    ]
    extra = ["--warm-pool-schedule", json.dumps(schedule), "--warm-pool-time-zone", "Asia/Kolkata"]
    with running_demo(tmp_path, 600, SCHEDULE_VPC_CIDR, *extra) as demo:
        wait_for_pool(demo, "stopped", set())
        time.sleep(3)  # a few more rounds: still one
        assert len(pool(demo)) == 1
