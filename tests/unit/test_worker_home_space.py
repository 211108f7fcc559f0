"""The agent's look at the home before Jupyter starts (emulated mode, the real agent):
usage reported, a full home refused in words, a grow recorded, a restored folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudjhub.worker.protocol import EXIT_HOME_FULL
from tests.unit.worker_harness import Worker

GB = 1 << 30


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


def _home(worker: Worker, volume: str, size_gb: int, **more: object) -> dict[str, object]:
    return {"volume_id": volume, "device": "/dev/sdf", "size_gb": size_gb, **more}


def test_usage_is_reported_and_a_full_home_fails_with_the_message(worker: Worker) -> None:
    home = worker.volumes / "vol-0a1"
    home.mkdir(parents=True)
    (home / "data.bin").write_bytes(b"x" * 4096)
    started = worker.start(worker.request(home_volume=_home(worker, "vol-0a1", 1)))
    assert started.returncode == 0, started.stderr
    reply = json.loads(started.stdout)
    assert (reply["home_used"], reply["home_size"]) == (4096, GB)

    with open(home / "big.bin", "wb") as fh:  # sparse: counts, costs nothing
        fh.truncate(GB - 4096 - (8 << 20))
    full = worker.start(worker.request(home_volume=_home(worker, "vol-0a1", 1)))
    assert full.returncode == EXIT_HOME_FULL
    assert "Your home folder is full (1.0 of 1.0 GB used)" in full.stderr
    assert "Traceback" not in full.stderr

    grown = worker.start(worker.request(home_volume=_home(worker, "vol-0a1", 3)))
    assert grown.returncode == 0, grown.stderr
    assert json.loads(grown.stdout)["home_size"] == 3 * GB
    assert (worker.volumes / "vol-0a1.grown").read_text() == "3\n"


def test_a_restored_folder_is_the_snapshots_files_read_only(worker: Worker) -> None:
    snap = worker.volumes.parent / "snapshots" / "snap-0123456789abcdef0"
    snap.mkdir(parents=True)
    (snap / "essay.txt").write_text("the deleted draft\n")
    folder = _home(
        worker, "vol-0b2", 1, from_snapshot="snap-0123456789abcdef0", name="restored-2026-11-29"
    )
    folder["device"] = "/dev/sdg"
    req = worker.request(home_volume=_home(worker, "vol-0a1", 1), restored_folder=folder)
    started = worker.start(req)
    assert started.returncode == 0, started.stderr
    restored = worker.volumes / "vol-0a1" / "restored-2026-11-29"
    assert (restored / "essay.txt").read_text() == "the deleted draft\n"
    assert not os.access(restored, os.W_OK) or os.geteuid() == 0
    assert (restored.stat().st_mode & 0o222) == 0


def test_a_home_made_from_a_snapshot_starts_with_its_files(worker: Worker) -> None:
    snap = worker.volumes.parent / "snapshots" / "snap-00000000000000001"
    snap.mkdir(parents=True)
    (snap / "notes.ipynb").write_text("{}")
    home = _home(worker, "vol-0c3", 1, from_snapshot="snap-00000000000000001")
    started = worker.start(worker.request(home_volume=home))
    assert started.returncode == 0, started.stderr
    assert (worker.volumes / "vol-0c3" / "notes.ipynb").read_text() == "{}"
