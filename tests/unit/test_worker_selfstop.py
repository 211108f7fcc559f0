"""Self-stop: the watchdog ``start`` runs next to the server, as real processes.

The "Jupyter server" answers ``/api/status`` only with the API token it was started
with; the "hub" is an HTTP server in this process that the tests take down (see
worker_harness). Every process started is ended by pid in teardown.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudjhub.local import processes as local_processes
from tests.helpers import alive
from tests.unit.worker_harness import TOKEN, FakeHub, Instance, wait_for


def _no_process(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"a process was started: {args}")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    yield from Instance.running(tmp_path)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    yield from FakeHub.running()


def test_idle_server_shuts_its_machine_down(
    instance: Instance, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = instance.start(instance.request("idle", hub.url))
    assert set(out) == {"pid", "ip", "port"}
    state = instance.record()
    dog = state["watchdog"]["pid"]
    assert sorted(instance.agent_pids()) == sorted([out["pid"], dog])
    with monkeypatch.context() as no_processes:
        # The local cloud halting a machine reads the same records, starting no process.
        no_processes.setattr(subprocess, "Popen", _no_process)
        assert local_processes.agent_pids(instance.root) == sorted([out["pid"], dog])
    assert state["watch"]["limit"] == 2
    assert state["watch"]["status_url"].endswith(f":{out['port']}/user/alice/api/status")

    wait_for(instance.shutdown_request.exists, 30, "the shutdown request")
    assert "no activity" in instance.shutdown_request.read_text()
    wait_for(lambda: not alive(dog), 10, "the watchdog to end")
    assert "shutting the instance down: no activity" in instance.watch_log.read_text()
    instance.assert_token_nowhere_on_disk()


def test_busy_server_without_hub_shuts_down_for_the_hub(instance: Instance, hub: FakeHub) -> None:
    """A busy server is read with its token (else the reason would be idleness)."""
    instance.start(instance.request("busy", hub.url))
    dog = instance.record()["watchdog"]["pid"]
    # The watchdog got the token by inheritance, not on its command line.
    assert TOKEN.encode() not in Path(f"/proc/{dog}/cmdline").read_bytes()
    assert f"CLOUDJHUB_WATCH_TOKEN={TOKEN}".encode() in Path(f"/proc/{dog}/environ").read_bytes()
    hub.stop()
    wait_for(instance.shutdown_request.exists, 30, "the shutdown request")
    assert "the hub has not answered" in instance.shutdown_request.read_text()
    assert "the hub does not answer" in instance.watch_log.read_text()


def test_stop_ends_the_watchdog_and_zero_timeout_starts_none(
    instance: Instance, hub: FakeHub
) -> None:
    instance.start(instance.request("busy", hub.url))
    dog = instance.record()["watchdog"]["pid"]
    stopped = instance.run("stop", "--user", "alice")
    assert json.loads(stopped.stdout) == {"stopped": True}
    wait_for(lambda: not alive(dog), 10, "the watchdog to end")

    out = instance.start(instance.request("idle", hub.url, idle_timeout=0))
    assert instance.record()["watchdog"] is None
    assert instance.agent_pids() == [out["pid"]]
