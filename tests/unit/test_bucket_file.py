"""Issue 10 review: the shared bucket file (`ec2_buckets_file`) is only a cache. Levels
left by another boot (the monotonic clock restarted) or from this clock's future are
dropped, a file that cannot be opened leaves each process its own levels (a warning,
once), and the claim queue's estimate, made on the event loop, never opens the file."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.aws import pacing
from cloudjhub.aws.pacing import BucketFile, Pacer

SIZES = {"CreateTags": (5.0, 1.0)}
BOOT = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def waits(pacer: Pacer, now: list[float], count: int) -> list[float]:
    return [round(pacer.reserve("CreateTags").ready_at - now[0], 3) for _ in range(count)]


@pytest.mark.parametrize("left_by", ["the previous version", "this version"])
def test_levels_left_by_a_previous_boot_are_dropped(tmp_path: Path, left_by: str) -> None:
    """The hub last wrote at uptime ~11 days; after a reboot the clock reads 100 s. The
    buckets are full now, and an hour on they are full again (they refill)."""
    path = tmp_path / "ec2-buckets.json"
    levels = {"CreateTags": [-20.0, 1_000_000.0]}
    if left_by == "this version":
        previous = BucketFile(path, boot="a-previous-boot")
        before = Pacer(SIZES, clock=lambda: 1_000_000.0, shared=previous, reserve_fraction=0)
        for _ in range(25):
            before.reserve("CreateTags")
        assert json.loads(path.read_text())["boot"] == "a-previous-boot"
    else:
        path.write_text(json.dumps(levels))
    now = [100.0]
    pacer = Pacer(SIZES, clock=lambda: now[0], shared=BucketFile(path), reserve_fraction=0)

    assert waits(pacer, now, 5) == [0.0] * 5
    now[0] += 3600
    assert waits(pacer, now, 5) == [0.0] * 5
    assert json.loads(path.read_text())["boot"] == BOOT


def test_levels_from_this_clocks_future_or_above_capacity_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "ec2-buckets.json"
    now = [100.0]
    for level in ([-50.0, 5_000.0], [1_000.0, 50.0]):
        path.write_text(json.dumps({"boot": BOOT, "levels": {"CreateTags": level}}))
        pacer = Pacer(SIZES, clock=lambda: now[0], shared=BucketFile(path), reserve_fraction=0)
        # Full, not in debt for ever nor holding more than the bucket does.
        assert waits(pacer, now, 6)[-1] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("why", ["no directory", "no permission", "a planted link"])
def test_a_bucket_file_that_cannot_be_opened_leaves_the_calls_going(
    tmp_path: Path, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each call paced from this process's own levels, one warning, and nothing
    written through a link."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours")
    path = tmp_path / "missing" / "ec2-buckets.json"
    if why == "no permission":  # as root nothing is denied: a directory is as unopenable
        path = tmp_path / "ro" / "ec2-buckets.json"
        path.mkdir(parents=True)
        path.parent.chmod(0o500)
    elif why == "a planted link":
        path = tmp_path / "ec2-buckets.json"
        path.symlink_to(target)
    now = [100.0]
    pacer = Pacer(SIZES, clock=lambda: now[0], shared=BucketFile(path), reserve_fraction=0)

    with caplog.at_level(logging.WARNING, "cloudjhub.pacing"):
        got = waits(pacer, now, 7)

    assert got == pytest.approx([0, 0, 0, 0, 0, 1.0, 2.0], abs=0.01)  # still paced
    assert len([r for r in caplog.records if "unusable" in r.message]) == 1
    assert target.read_text() == "not yours"


def test_a_paced_boto3_call_goes_when_the_bucket_file_cannot_be_opened(
    ec2: Any, tmp_path: Path
) -> None:
    """Through botocore's before-call hook, as the hub's clients are paced."""
    pacer = Pacer(shared=BucketFile(tmp_path / "missing" / "ec2-buckets.json"))
    pacer.attach(ec2.client)
    assert ec2.client.describe_instances()["Reservations"] == []


def test_the_estimate_shown_while_claiming_never_opens_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim queue asks for estimates on the event loop every second: from the
    levels this process last saw, while another process holds the file's lock the
    loop goes on."""
    path = tmp_path / "ec2-buckets.json"
    now = [100.0]
    pacer = Pacer(SIZES, clock=lambda: now[0], shared=BucketFile(path), reserve_fraction=0)
    for _ in range(7):
        pacer.reserve("CreateTags")  # 2 in debt
    opened: list[tuple[int, str]] = []  # (thread, path)
    real_open = os.open

    def watched(file: Any, *args: Any, **kwargs: Any) -> int:
        opened.append((threading.get_ident(), str(file)))
        return real_open(file, *args, **kwargs)

    estimated_in: list[int] = []

    def estimate() -> list[float]:
        estimated_in.append(threading.get_ident())
        return pacer.wait_for("CreateTags", [1, 3])

    monkeypatch.setattr(pacing.os, "open", watched)

    async def estimate_while_locked() -> list[float]:
        with path.open("r+") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # the keeper, mid-round
            # A call of the hub's own, in a thread, waiting for the keeper's lock.
            call = threading.Thread(target=pacer.reserve, args=("DescribeInstances",))
            call.start()
            await asyncio.sleep(0.1)
            try:
                return await asyncio.wait_for(asyncio.to_thread(estimate), 2)
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)
                call.join(5)

    assert asyncio.run(estimate_while_locked()) == pytest.approx([3.0, 5.0])
    assert (estimated_in[0], str(path)) not in opened
