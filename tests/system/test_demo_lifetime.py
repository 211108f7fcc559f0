"""The local cloud never outlives the demo: not when the demo is killed with SIGKILL,
and not when its EC2 endpoint went away before it was stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudjhub.local.guardian import sweep
from tests.system.conftest import Demo, launch_demo, leftovers, plain_moto_server

KILLED_VPC = "127.203.0.0/16"
ENDPOINT_VPC = "127.204.0.0/16"


def wait_for_nothing_left(demo: Demo, hub_pids: set[int], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := leftovers(demo, hub_pids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@contextlib.contextmanager
def cleaned_up(state_dir: Path) -> Iterator[None]:
    """Whatever the test leaves if it fails is still ended, by pid."""
    try:
        yield
    finally:
        sweep(state_dir, [f"CLOUDJHUB_DEMO_HUB={state_dir}"])


def test_a_demo_killed_with_sigkill_leaves_nothing_running(tmp_path: Path) -> None:
    with cleaned_up(tmp_path):
        demo = launch_demo(tmp_path, 3600, KILLED_VPC)
        demo.start("alice")
        hub_pids = {demo.facts()["hub_pid"]}
        # In a session of its own (its own share of the CPU, not the local cloud's),
        # which does not keep it from ending with the demo: asserted once all ended.
        own_session = os.getsid(demo.facts()["hub_pid"]) != os.getsid(demo.proc.pid)
        running = leftovers(demo, hub_pids)
        assert any("Jupyter" in what for what in running), running
        assert any("sshd" in what for what in running), running

        demo.proc.send_signal(signal.SIGKILL)  # no handler runs: only the guardian is left
        demo.proc.wait()

        assert wait_for_nothing_left(demo, hub_pids) == []
        # It was the guardian's doing (it says so once its sweep is over).
        log = tmp_path / "guardian.log"
        deadline = time.monotonic() + 30
        while "the demo ended" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert own_session, "the hub ran in the demo's session"


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with plain_moto_server(tmp_path) as server:
        yield server


def test_machines_end_with_the_demo_when_its_endpoint_is_gone(
    tmp_path: Path, moto_server: tuple[subprocess.Popen[bytes], str]
) -> None:
    """As when a script stops the endpoint and the demo together: the emulator ends its
    machines from its own records, without asking EC2."""
    moto, endpoint = moto_server
    state_dir = tmp_path / "demo"
    state_dir.mkdir()
    with cleaned_up(state_dir):
        demo = launch_demo(state_dir, 3600, ENDPOINT_VPC, "--aws-endpoint", endpoint)
        demo.start("alice")
        hub_pids = {demo.facts()["hub_pid"]}
        assert any("Jupyter" in what for what in leftovers(demo, hub_pids))

        moto.kill()
        moto.wait()
        demo.proc.send_signal(signal.SIGTERM)
        status = demo.proc.wait(timeout=120)

        assert status == 0, (state_dir / "demo.out").read_text()
        assert leftovers(demo, hub_pids) == []
