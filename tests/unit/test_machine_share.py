"""Issue 10: emulated users' machines never take the hub's CPU share (local/machine_share).

On AWS a student's instance has CPUs of its own. Emulated, every SSH session and
server was a session of its own, each weighing as much as the hub under Linux's
autogroup scheduler. Now every process of a worker machine runs in one cgroup of
the local cloud; the manager's (it runs the hub) does not.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from cloudjhub import remote
from cloudjhub.aws.client import Instance
from cloudjhub.local import emulator, guardian, processes, sshd
from cloudjhub.local.machine_share import CPU_CONTROLLER, MachineShare
from cloudjhub.local.ports import free_port
from cloudjhub.tags import ROLE_TAG, Role
from tests.helpers import missing_here
from tests.unit.test_remote import keygen

SSHD_IP = "127.0.0.78"


def _cpu_cgroup(text: str) -> str:
    """The cpu controller's cgroup in a /proc/PID/cgroup text."""
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return ""


@pytest.fixture
def share(tmp_path: Path) -> MachineShare:
    if not os.access(CPU_CONTROLLER, os.W_OK):
        missing_here(f"{CPU_CONTROLLER} is not writable here (CI runs as root)")
    made = MachineShare(tmp_path / "state")
    assert made.path is not None, made.reason
    return made


def test_a_machines_ssh_sessions_run_in_the_machines_cgroup(
    share: MachineShare, tmp_path: Path
) -> None:
    """Through a real sshd started as the emulator starts it, and a real SSH login."""
    root = tmp_path / "instance"
    host_pub = sshd.ensure_host_key(root / "etc" / "ssh")
    client_key, client_pub = keygen(tmp_path / "client" / "id_ed25519")
    port = free_port(SSHD_IP)
    env = {"CLOUDJHUB_TEST": "1"}
    proc = sshd.start_sshd(root, SSHD_IP, port, client_pub, env, share.prefix())
    try:
        deadline = time.monotonic() + 10
        while not remote.tcp_open(SSHD_IP, port, timeout=0.5):
            assert proc.poll() is None, "sshd exited"
            assert time.monotonic() < deadline, "sshd did not start listening"
            time.sleep(0.05)
        kind, data = host_pub.split()[:2]
        target = remote.Target(
            SSHD_IP, port, os.environ.get("USER", "root"), str(client_key), (f"{kind} {data}",)
        )
        session = remote.run_on(target, ["cat", "/proc/self/cgroup"])
    finally:
        sshd.end_pids(sshd.with_descendants([proc.pid]))
        proc.wait(timeout=10)
    assert share.path is not None
    ours = "/" + share.path.name
    assert session.status == 0, session.stderr
    assert _cpu_cgroup(session.stdout) == ours, session.stdout
    # The test itself (where the hub would be) stays out.
    assert _cpu_cgroup(Path("/proc/self/cgroup").read_text()) != ours
    share.close()
    assert not share.path.exists()


def test_without_a_cpu_controller_machines_start_as_before(tmp_path: Path) -> None:
    made = MachineShare(tmp_path / "state", controller=tmp_path / "no-such-controller")
    assert made.prefix() == []
    assert str(tmp_path / "no-such-controller") in made.reason
    made.close()  # nothing to remove, no error


class OneEc2:
    """A listing of one running worker and one running manager."""

    def describe_all(self) -> list[Instance]:
        return [
            Instance(
                "i-0000000000000000a",
                "running",
                "t3.small",
                "127.9.0.1",
                None,
                "us-east-1a",
                tags={ROLE_TAG: Role.WORKER.value},
            ),
            Instance(
                "i-0000000000000000b",
                "running",
                "t3.small",
                "127.9.0.2",
                None,
                "us-east-1a",
                tags={ROLE_TAG: Role.MANAGER.value},
            ),
        ]

    def public_keys(self) -> dict[str, str]:
        return {}


def test_the_emulator_puts_workers_in_the_share_and_the_manager_not(
    share: MachineShare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefixes: dict[str, list[str]] = {}

    def start_sshd(root: Path, *args: Any) -> Any:
        prefixes[root.name] = list(args[4]) if len(args) > 4 else []
        return type("Sshd", (), {"pid": -1, "wait": lambda self, timeout=None: 0})()

    monkeypatch.setattr(sshd, "start_sshd", start_sshd)
    monkeypatch.setattr(sshd, "ensure_host_key", lambda etc: "ssh-ed25519 KEY")
    monkeypatch.setattr(sshd, "end_pids", lambda pids: None)
    monkeypatch.setattr(processes, "machine_pids", lambda root, instance_id: [])
    fleet = emulator.FleetEmulator(
        OneEc2(),  # type: ignore[arg-type]
        share_state := tmp_path / "state",
        2222,
        console=lambda instance_id, text: None,
        share=share,
    )
    # One cgroup per local cloud: its name comes from the state dir.
    assert share.path == MachineShare(share_state).path
    fleet.reconcile()
    assert share.path is not None
    assert str(share.path / "cgroup.procs") in prefixes["i-0000000000000000a"]
    assert prefixes["i-0000000000000000b"] == []
    fleet.stop()
    assert not share.path.exists(), f"{share_state}: the cgroup outlived the local cloud"


def test_the_guardian_removes_the_cgroup_of_a_local_cloud_that_was_killed(
    share: MachineShare, tmp_path: Path
) -> None:
    assert share.path is not None and share.path.is_dir()
    guardian.sweep(tmp_path / "state", [])
    assert not share.path.exists()
