"""A hibernated worker keeps its mounts, so its restored folder (~/restored-<date>)
would still be mounted when the next start detaches its volume: the spawner asks the
agent to unmount it before hibernating, and the agent does."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudjhub import remote
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.host_keys import HostKeyStore
from cloudjhub.local import motoserver
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.worker.mountinfo import mounts_under
from cloudjhub.worker.shared_mount import unmount_under
from tests.unit.test_ec2_queue import configured, spawner_for  # noqa: F401 (fixtures)
from tests.unit.worker_harness import Worker

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs as root)")
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize(
    ("hibernate", "market"), [(True, "on-demand"), (False, "on-demand"), (True, "spot")]
)
def test_a_hibernating_stop_has_the_agent_unmount_restored_folders_first(
    ec2: LocalCloudEc2,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    configured: Callable[..., InstanceSpawner],  # noqa: F811 - the fixture
    hibernate: bool,
    market: str,
) -> None:
    """A spot worker is launched without hibernation and ended, never hibernated: its
    stop asks nothing of the agent either."""
    motoserver._patch_stop_instances()
    store = tmp_path / "host-keys.json"
    ann = configured(
        "ann",
        host_key_store=str(store),
        hibernate=hibernate,
        market=market,
        user_home_ebs_size=5,
        worker_ebs_size=12,
        ssh_port=22,
        ssh_username="ubuntu",
        ssh_key_file=str(tmp_path / "key"),
        worker_command=["cloudjhub-worker"],
    )
    asyncio.run(ann.start())
    assert ann.instance_id
    HostKeyStore(store).pin(ann.instance_id, [HOST_KEY])  # as the start's connect would
    ran: list[tuple[str, str]] = []

    def run_on(target: remote.Target, argv: list[str], *_: object) -> remote.CommandResult:
        ran.append((argv[-1] if argv[-1] == "unmount-restored" else argv[1], _state()))
        return remote.CommandResult(0, '{"unmounted": []}', "")

    def _state() -> str:
        return ec2.describe([str(ann.instance_id)])[0].state

    monkeypatch.setattr(remote, "run_on", run_on)
    asyncio.run(ann.stop())
    hibernates = hibernate and market != "spot"
    assert motoserver.stopped_with_hibernate(ann.instance_id) is hibernates
    unmounts = [state for what, state in ran if what == "unmount-restored"]
    assert unmounts == (["running"] if hibernates else []), ran


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


@needs_root
def test_the_agent_unmounts_restored_folders_and_their_other_mounts_only(
    worker: Worker, tmp_path: Path
) -> None:
    home = worker.root / "home" / "bob"
    restored, bound, other = home / "restored-2026-11-02", home / "old", home / "scratch"
    for folder in (restored, bound, other, tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
    try:
        for point in (restored, other):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "t", str(point)], check=True)
        subprocess.run(["mount", "--bind", str(restored), str(bound)], check=True)
        # A bind of a system folder named like a restored one: its device is the
        # system's, so nothing else from it is touched.
        lookalike = home / "restored-2026-11-03"
        lookalike.mkdir()
        subprocess.run(["mount", "--bind", str(tmp_path / "elsewhere"), str(lookalike)])

        done = worker.run("unmount-restored")
        assert done.returncode == 0, done.stderr
        assert sorted(mounts_under(home)) == sorted([str(other), str(lookalike)])
    finally:
        unmount_under(worker.root)
