"""The fleet emulator boots and halts machines side by side, a bounded number at once:
a storm's one StartInstances of hundreds must not boot them one after another."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.local import emulator, processes, sshd


class Gauge:
    """How many calls run at once, at most."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def hold(self, seconds: float) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        time.sleep(seconds)
        with self._lock:
            self.now -= 1


class FakeEc2:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states

    def describe_all(self) -> list[Instance]:
        return [
            Instance(i, state, "t3.small", f"127.9.0.{n + 1}", None, "us-east-1a")
            for n, (i, state) in enumerate(self.states.items())
        ]

    def public_keys(self) -> dict[str, str]:
        return {}


class FakeSshd:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def gauges(monkeypatch: pytest.MonkeyPatch) -> dict[str, Gauge]:
    boots, halts = Gauge(), Gauge()

    def start_sshd(root: Path, *_: Any) -> FakeSshd:
        boots.hold(0.2)
        return FakeSshd(-1)

    def machine_pids(root: Path, instance_id: str) -> list[int]:
        halts.hold(0.2)
        return [-1]

    monkeypatch.setattr(sshd, "start_sshd", start_sshd)
    monkeypatch.setattr(sshd, "ensure_host_key", lambda etc: "ssh-ed25519 AAAA")
    monkeypatch.setattr(sshd, "end_pids", lambda pids: None)
    monkeypatch.setattr(processes, "machine_pids", machine_pids)
    return {"boot": boots, "halt": halts}


def test_machines_boot_and_halt_side_by_side_at_most_parallel_at_once(
    tmp_path: Path, gauges: dict[str, Gauge]
) -> None:
    ids = [f"i-{n:017x}" for n in range(12)]
    ec2 = FakeEc2(dict.fromkeys(ids, "running"))
    fleet = emulator.FleetEmulator(
        ec2,  # type: ignore[arg-type]
        tmp_path,
        2222,
        publish_console=False,
        parallel=4,
    )
    began = time.monotonic()
    fleet.reconcile()
    assert sorted(fleet.machines) == ids
    assert gauges["boot"].calls == 12
    assert gauges["boot"].most == 4
    # Every machine's host key is recorded, none lost to a concurrent rewrite.
    assert len(fleet.known_hosts.read_text().splitlines()) == 12

    ec2.states = dict.fromkeys(ids, "stopped")
    fleet.reconcile()
    assert fleet.machines == {}
    assert gauges["halt"].calls == 12
    assert gauges["halt"].most == 4
    # 2 x 12 machines of 0.2 s, 4 at a time: 1.2 s, not 4.8 s.
    assert time.monotonic() - began < 3.5
