"""The Jupyter server's life on an instance: start, replace, resume, stop, status.

``cloudjhub-worker`` runs as a real subprocess in emulated mode against fake servers
(see worker_harness); every test stops what it starts and kills leftovers by pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import alive
from tests.unit.worker_harness import (
    SECRET,
    TOKEN,
    FakeHub,
    Instance,
    Worker,
    wait_for,
    wait_gone,
)

CRASHING_SERVER = """
import sys
print("this is stdout before the crash", flush=True)
print("fatal: could not frobnicate the widget", file=sys.stderr, flush=True)
sys.exit(7)
"""


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    yield from Instance.running(tmp_path)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    yield from FakeHub.running()


def test_start_runs_server_with_minimal_env_and_records_state(worker: Worker) -> None:
    req = worker.request()
    result = worker.start(req)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {"pid": out["pid"], "ip": "127.0.0.1", "port": req["port"]}
    assert alive(out["pid"])

    info = worker.track_info("alice")
    assert info is not None and info["pid"] == out["pid"]
    home = worker.root / "home" / "alice"
    assert Path(info["cwd"]) == home
    expected = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "JUPYTER_CONFIG_PATH"}
    assert set(info["env"]) == expected | set(req["env"])
    assert ("--allow-root" in info["argv"]) == (os.geteuid() == 0)

    state = json.loads(worker.record_file("alice").read_text())
    assert state["pid"] == out["pid"]
    assert (state["ip"], state["port"]) == ("127.0.0.1", req["port"])
    assert abs(state["started"] - time.time()) < 60
    assert worker.record_file("alice").parent.stat().st_mode & 0o777 == 0o700

    log = worker.log_file("alice").read_text()
    assert log.startswith("=== ")
    assert "fake server starting" in log
    for text in (result.stdout, result.stderr, log, worker.record_file("alice").read_text()):
        assert SECRET not in text


def test_status_stop_and_pids(worker: Worker) -> None:
    assert json.loads(worker.run("pids").stdout) == []
    idle = json.loads(worker.run("status", "--user", "alice").stdout)
    assert idle["running"] is False and idle["pid"] is None

    req = worker.request()
    result = worker.start(req)
    assert result.returncode == 0, result.stderr
    pid = json.loads(result.stdout)["pid"]

    status = json.loads(worker.run("status", "--user", "alice").stdout)
    assert status["running"] is True
    assert (status["pid"], status["ip"], status["port"]) == (pid, "127.0.0.1", req["port"])
    assert isinstance(status["started"], int)
    assert json.loads(worker.run("pids").stdout) == [pid]

    stopped = worker.run("stop", "--user", "alice")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {"stopped": True}
    assert wait_gone(pid)
    assert not worker.record_file("alice").exists()
    assert json.loads(worker.run("status", "--user", "alice").stdout)["running"] is False
    assert json.loads(worker.run("pids").stdout) == []

    again = worker.run("stop", "--user", "alice")
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"stopped": False}


def test_start_replaces_running_server(worker: Worker) -> None:
    first = worker.start(worker.request())
    assert first.returncode == 0, first.stderr
    old_pid = json.loads(first.stdout)["pid"]

    second = worker.start(worker.request())
    assert second.returncode == 0, second.stderr
    new_pid = json.loads(second.stdout)["pid"]
    assert new_pid != old_pid
    assert wait_gone(old_pid)
    assert alive(new_pid)
    assert json.loads(worker.run("pids").stdout) == [new_pid]
    assert worker.log_file("alice").read_text().count("=== ") >= 2


def test_status_ignores_dead_recorded_pid(worker: Worker) -> None:
    result = worker.start(worker.request())
    assert result.returncode == 0, result.stderr
    pid = json.loads(result.stdout)["pid"]
    os.killpg(pid, signal.SIGKILL)
    assert wait_gone(pid)
    assert json.loads(worker.run("status", "--user", "alice").stdout)["running"] is False
    assert json.loads(worker.run("pids").stdout) == []
    assert json.loads(worker.run("stop", "--user", "alice").stdout) == {"stopped": False}


def test_relative_command_is_found_next_to_the_agent_python(worker: Worker) -> None:
    req = worker.request()
    req["cmd"] = ["python", *req["cmd"][1:]]
    result = worker.start(req)
    assert result.returncode == 0, result.stderr
    info = worker.track_info("alice")
    assert info is not None
    assert info["argv"][0] == req["cmd"][1]
    assert Path(info["executable"]).parent == Path(sys.executable).parent


def test_unknown_command_is_rejected(worker: Worker) -> None:
    req = worker.request(cmd=["no-such-jupyter-command-xyz"])
    result = worker.start(req)
    assert result.returncode == 2
    assert "no-such-jupyter-command-xyz" in result.stderr
    assert not worker.record_file("alice").exists()


def test_server_exiting_reports_status_and_log_tail(worker: Worker) -> None:
    crash = worker.script("crash.py", CRASHING_SERVER)
    req = worker.request(cmd=[sys.executable, str(crash)])
    result = worker.start(req)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith("cloudjhub-worker: Jupyter exited with status 7;")
    assert "fatal: could not frobnicate the widget" in result.stderr
    assert not worker.record_file("alice").exists()
    assert SECRET not in result.stderr


def test_server_not_listening_times_out_and_is_killed(worker: Worker) -> None:
    req = worker.request(timeout=1)
    req["cmd"].append("--no-listen")
    result = worker.start(req)
    assert result.returncode == 4  # the timeout, not a hang: run() has its own limit
    assert "last lines of its log" in result.stderr
    assert "fake server starting" in result.stderr
    info = worker.track_info("alice")
    assert info is not None
    assert wait_gone(info["pid"])
    assert not worker.record_file("alice").exists()


def test_port_already_in_use_is_an_error(worker: Worker) -> None:
    req = worker.request()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", req["port"]))
        busy.listen()
        result = worker.start(req)
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert worker.track_info("alice") is None


def test_resume_keeps_the_same_server_and_returns_its_token(
    instance: Instance, hub: FakeHub
) -> None:
    first = instance.request("busy", hub.url, resume=True, idle_timeout=600)
    out = instance.start(first)
    old_dog = instance.record()["watchdog"]["pid"]

    again = {**first, "env": {**first["env"], "JUPYTERHUB_API_TOKEN": "a-new-token"}}
    resumed = instance.start(again)
    assert resumed == {
        "pid": out["pid"],
        "ip": "127.0.0.1",
        "port": first["port"],
        "resumed": True,
        "api_token": TOKEN,
    }
    assert alive(out["pid"])
    state = instance.record()
    assert state["resumed"] >= state["started"]
    assert state["watchdog"]["pid"] != old_dog and alive(state["watchdog"]["pid"])
    wait_for(lambda: not alive(old_dog), 10, "the old watchdog to end")

    # A different server (here: another setting) is started afresh, with the new token.
    changed = {**again, "env": {**again["env"], "JUPYTERHUB_ACTIVITY_INTERVAL": "7"}}
    fresh = instance.start(changed)
    assert set(fresh) == {"pid", "ip", "port"} and fresh["pid"] != out["pid"]
    wait_for(lambda: not alive(out["pid"]), 10, "the old server to end")
    instance.assert_token_nowhere_on_disk()


def test_without_resume_a_running_server_is_replaced(instance: Instance, hub: FakeHub) -> None:
    out = instance.start(instance.request("busy", hub.url, idle_timeout=600))
    again = instance.start(instance.request("busy", hub.url, idle_timeout=600))
    assert again["pid"] != out["pid"] and "api_token" not in again
