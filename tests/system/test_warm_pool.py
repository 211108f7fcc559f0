"""The warm pool through the demo: a schedule window open now fills it (a stopped
worker with no user), a first login claims that very worker (told its place in the
claim queue on the spawn page), and the pool refills; the hub and its keeper pace
against one file of bucket levels."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.system.conftest import Demo, running_demo
from tests.system.test_like_aws import start_reading_progress

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


def schedule_open_now() -> list[dict[str, Any]]:
    """A window open now in Asia/Kolkata (UTC+05:30, so a wrong time zone would miss it)
    and one that closed half an hour ago. The clock is the real one; the unit tests
    inject theirs (test_pool_schedule.py, test_warm_pool_keeper.py)."""
    now = datetime.now(ZoneInfo("Asia/Kolkata")) - timedelta(minutes=1)
    closed = now - timedelta(minutes=30)
    return [
        {"cron": f"{now.minute} {now.hour} * * *", "duration": 900, "size": 1},
        {"cron": f"{closed.minute} {closed.hour} * * *", "duration": 60, "size": 3},
    ]


def test_a_scheduled_pool_is_filled_claimed_and_refilled(tmp_path: Path) -> None:
    """No warm_pool_size: the schedule's open window alone makes the hub's keeper fill
    the pool (to that window's size only), a first login claims that very worker, and
    the pool refills."""
    extra = ["--warm-pool-schedule", json.dumps(schedule_open_now())]
    extra += ["--warm-pool-time-zone", "Asia/Kolkata"]
    with running_demo(tmp_path, 600, VPC_CIDR, *extra) as demo:
        member = wait_for_pool(demo, "stopped", set())

        messages = start_reading_progress(demo, "alice")

        [mine] = demo.instances("alice")
        assert mine["InstanceId"] == member and mine["State"]["Name"] == "running"
        assert "cloudjhub:pool" not in {t["Key"] for t in mine["Tags"]}
        assert demo.request("GET", f"{demo.hub_url}user/alice/api/status").status_code == 200
        wait_for_pool(demo, "stopped", {member})
        assert len(pool(demo)) == 1  # the open window's size, not the closed one's
        waited = "Waiting for a ready instance from the warm pool: you are number 1 in"
        assert any(m.startswith(waited) for m in messages), messages
        # One copy of the buckets: the keeper's launch and the hub's claim in one file.
        [levels] = Path(demo.state_dir).rglob("ec2-buckets.json")
        assert {"RunInstances", "CreateTags"} <= set(json.loads(levels.read_text())["levels"])
