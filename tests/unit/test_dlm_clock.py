"""The demo's DLM on its own clock: the local engine run at the current time, over and
over, so a demo's snapshots come on schedule without a test driving them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from cloudjhub.aws.backups import Backups, policy_details
from cloudjhub.aws.client import boto_client
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.backup_schedule import to_dlm
from cloudjhub.local.dlm import DlmApi, DlmEngine
from cloudjhub.local.dlm_clock import DlmClock
from tests.unit.conftest import REGION, ec2_client


def test_the_clock_takes_due_snapshots_at_the_current_time(
    ec2: LocalCloudEc2, local_dlm: tuple[DlmApi, str]
) -> None:
    ec2.create_home_volume("alice", 1, f"{REGION}a", "alice-id")
    Backups.connect(ec2, REGION, None).ensure_policy(
        "arn:aws:iam::123456789012:role/AWSDataLifecycleManagerDefaultRole",
        policy_details("alpha", True, to_dlm("0 * * * *"), 2),
    )
    engine = DlmEngine(boto_client("dlm", REGION), ec2_client())
    now = [datetime.now(UTC)]
    clock = DlmClock(engine.run, now=lambda: now[0])
    assert clock.tick() == []  # the next full hour is not here yet
    now[0] += timedelta(hours=1)
    assert len(clock.tick()) == 1
    assert len(Backups.connect(ec2, REGION, None).snapshots("alice")) == 1


def test_the_clock_ticks_until_stopped_and_outlives_a_failed_round() -> None:
    rounds: list[datetime] = []
    ticked = threading.Event()

    def run(now: datetime) -> list[str]:
        rounds.append(now)
        if len(rounds) == 1:
            raise RuntimeError("the endpoint went away for a moment")
        ticked.set()
        return []

    clock = DlmClock(run, interval=0.01)
    clock.start()
    assert ticked.wait(5)
    clock.stop()
    after = len(rounds)
    assert after >= 2
    threading.Event().wait(0.05)
    assert len(rounds) == after  # stopped
