"""Accounts and homes: the emulated home volume, and finding a real volume's device."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudjhub.worker.accounts import device_candidates, wait_for_device
from cloudjhub.worker.protocol import AgentError, HomeVolume
from tests.unit.worker_harness import Worker


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


def test_home_volume_is_a_directory_in_volumes_dir(worker: Worker) -> None:
    req = worker.request(home_volume={"volume_id": "vol-0abc123", "device": "/dev/sdf"})
    result = worker.start(req)
    assert result.returncode == 0, result.stderr
    info = worker.track_info("alice")
    assert info is not None
    assert Path(info["cwd"]) == worker.volumes / "vol-0abc123"


def test_device_candidates() -> None:
    volume = HomeVolume(volume_id="vol-0abc", device="/dev/sdf")
    assert device_candidates(volume) == [
        Path("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc"),
        Path("/dev/sdf"),
        Path("/dev/xvdf"),
    ]


def test_wait_for_device_gives_up(tmp_path: Path) -> None:
    clock = iter(range(100))
    with pytest.raises(AgentError, match="did not appear"):
        wait_for_device(
            [tmp_path / "missing"], timeout=3, sleep=lambda _s: None, clock=lambda: next(clock)
        )
    present = tmp_path / "dev"
    present.touch()
    assert wait_for_device([tmp_path / "missing", present], timeout=3) == present
