"""Tests for ``cloudjhub-worker``, run as a real subprocess in emulated mode.

The "Jupyter server" is a fake script that listens on the requested port, so no hub is
needed; every test stops what it starts and kills leftovers by pid in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.worker import agent

SECRET = "s3cr3t-token-value-0123456789"

FAKE_SERVER = """
import json, os, socket, sys, time
ip, port, info = sys.argv[1], int(sys.argv[2]), sys.argv[3]
listen = "--no-listen" not in sys.argv
with open(info + ".tmp", "w") as fh:
    json.dump({"pid": os.getpid(), "env": sorted(os.environ), "cwd": os.getcwd(),
               "argv": sys.argv, "executable": sys.executable}, fh)
os.replace(info + ".tmp", info)
print("fake server starting on %s:%d" % (ip, port), flush=True)
if listen:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    sock.listen(16)
while True:
    time.sleep(3600)
"""

CRASHING_SERVER = """
import sys
print("this is stdout before the crash", flush=True)
print("fatal: could not frobnicate the widget", file=sys.stderr, flush=True)
sys.exit(7)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_running(pid: int) -> bool:
    """Alive and not a zombie (our servers are reparented to init, which may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZXx"


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Worker:
    """Runs the agent against a temporary instance root and remembers what it started."""

    tmp: Path
    root: Path
    volumes: Path
    pids: set[int] = field(default_factory=set)
    users: set[str] = field(default_factory=set)

    def run(
        self, *args: str, request: dict[str, Any] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["CLOUDJHUB_WORKER_ROOT"] = str(self.root)
        env["CLOUDJHUB_VOLUMES_DIR"] = str(self.volumes)
        env["CLOUDJHUB_TEST_LEAK"] = "must-not-reach-the-server"
        return subprocess.run(
            [sys.executable, "-m", "cloudjhub.worker.agent", *args],
            input=json.dumps(request) if request is not None else "",
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    def script(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def request(self, user: str = "alice", **overrides: Any) -> dict[str, Any]:
        """A start request running the fake server; its info file is ``tmp/<user>.info``."""
        port = free_port()
        server = self.script("fake_server.py", FAKE_SERVER)
        info = self.tmp / f"{user}.info"
        req: dict[str, Any] = {
            "user": user,
            "ip": "127.0.0.1",
            "port": port,
            "env": {"JUPYTERHUB_API_TOKEN": SECRET, "JUPYTERHUB_USER": user},
            "cmd": [sys.executable, str(server), "127.0.0.1", str(port), str(info)],
            "home_volume": None,
            "timeout": 10,
        }
        req.update(overrides)
        return req

    def start(self, req: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        self.users.add(req["user"])
        result = self.run("start", request=req)
        if result.returncode == 0:
            self.pids.add(json.loads(result.stdout)["pid"])
        self.track_info(req["user"])
        return result

    def track_info(self, user: str) -> dict[str, Any] | None:
        info = self.tmp / f"{user}.info"
        if not info.exists():
            return None
        data = json.loads(info.read_text())
        self.pids.add(data["pid"])
        return data

    def state_file(self, user: str) -> Path:
        return self.root / "run" / "cloudjhub" / f"{user}.json"

    def log_file(self, user: str) -> Path:
        return self.root / "var" / "log" / "cloudjhub" / f"{user}.log"

    def cleanup(self) -> None:
        for user in self.users:
            self.run("stop", "--user", user, "--timeout", "2")
        for pid in self.pids:
            if process_running(pid):
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(OSError):
                        kill(pid, signal.SIGKILL)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = Worker(tmp=tmp_path, root=tmp_path / "instance", volumes=tmp_path / "volumes")
    try:
        yield w
    finally:
        w.cleanup()


def test_help_for_group_and_every_command(worker: Worker) -> None:
    result = worker.run("--help")
    assert result.returncode == 0
    for command in ("start", "stop", "status", "log", "pids"):
        assert command in result.stdout
        sub = worker.run(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert f"cloudjhub-worker {command}" in sub.stdout


def test_start_runs_server_with_minimal_env_and_records_state(worker: Worker) -> None:
    req = worker.request()
    result = worker.start(req)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {"pid": out["pid"], "ip": "127.0.0.1", "port": req["port"]}
    assert process_running(out["pid"])

    info = worker.track_info("alice")
    assert info is not None and info["pid"] == out["pid"]
    home = worker.root / "home" / "alice"
    assert Path(info["cwd"]) == home
    expected = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "JUPYTER_CONFIG_PATH"}
    assert set(info["env"]) == expected | set(req["env"])
    assert ("--allow-root" in info["argv"]) == (os.geteuid() == 0)

    state = json.loads(worker.state_file("alice").read_text())
    assert state["pid"] == out["pid"]
    assert (state["ip"], state["port"]) == ("127.0.0.1", req["port"])
    assert abs(state["started"] - time.time()) < 60
    assert worker.state_file("alice").parent.stat().st_mode & 0o777 == 0o700

    log = worker.log_file("alice").read_text()
    assert log.startswith("=== ")
    assert "fake server starting" in log
    for text in (result.stdout, result.stderr, log, worker.state_file("alice").read_text()):
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
    assert not worker.state_file("alice").exists()
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
    assert process_running(new_pid)
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


def test_home_volume_is_a_directory_in_volumes_dir(worker: Worker) -> None:
    req = worker.request(home_volume={"volume_id": "vol-0abc123", "device": "/dev/sdf"})
    result = worker.start(req)
    assert result.returncode == 0, result.stderr
    info = worker.track_info("alice")
    assert info is not None
    assert Path(info["cwd"]) == worker.volumes / "vol-0abc123"


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
    assert not worker.state_file("alice").exists()


def test_server_exiting_reports_status_and_log_tail(worker: Worker) -> None:
    crash = worker.script("crash.py", CRASHING_SERVER)
    req = worker.request(cmd=[sys.executable, str(crash)])
    result = worker.start(req)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith("cloudjhub-worker: Jupyter exited with status 7;")
    assert "fatal: could not frobnicate the widget" in result.stderr
    assert not worker.state_file("alice").exists()
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
    assert not worker.state_file("alice").exists()


def test_port_already_in_use_is_an_error(worker: Worker) -> None:
    req = worker.request()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", req["port"]))
        busy.listen()
        result = worker.start(req)
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert worker.track_info("alice") is None


def test_log_command_prints_last_lines(worker: Worker) -> None:
    assert worker.run("log", "--user", "alice").stdout == ""
    result = worker.start(worker.request())
    assert result.returncode == 0, result.stderr
    full = worker.run("log", "--user", "alice")
    assert full.returncode == 0
    assert full.stdout.splitlines()[0].startswith("=== ")
    last = worker.run("log", "--user", "alice", "--lines", "1").stdout.splitlines()
    assert len(last) == 1 and "fake server starting" in last[0]


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"user": "Alice!"}, "user"),
        ({"user": None}, "user"),
        ({"ip": "not-an-ip"}, "ip"),
        ({"port": 0}, "port"),
        ({"port": "8888"}, "port"),
        ({"port": True}, "port"),
        ({"env": {"A": 1}}, "env"),
        ({"env": ["A"]}, "env"),
        ({"cmd": []}, "cmd"),
        ({"cmd": "jupyterhub-singleuser"}, "cmd"),
        ({"cmd": ["x", 3]}, "cmd"),
        ({"home_volume": {"volume_id": "../../etc"}}, "home_volume"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_invalid_requests_exit_2_naming_the_field(
    worker: Worker, change: dict[str, Any], field_name: str
) -> None:
    req = worker.request()
    req.update(change)
    result = worker.run("start", request=req)
    assert result.returncode == 2
    assert field_name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert SECRET not in result.stderr
    assert not (worker.tmp / "alice.info").exists()


def test_malformed_stdin_and_bad_user_option(worker: Worker) -> None:
    assert worker.run("start").returncode == 2
    proc = subprocess.run(
        [sys.executable, "-m", "cloudjhub.worker.agent", "start"],
        input="[1, 2]",
        capture_output=True,
        text=True,
        env={**os.environ, "CLOUDJHUB_WORKER_ROOT": str(worker.root)},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "object" in proc.stderr
    for command in ("stop", "status", "log"):
        result = worker.run(command, "--user", "../etc")
        assert result.returncode == 2
        assert "--user" in result.stderr


def test_request_is_read_without_waiting_for_eof(worker: Worker) -> None:
    """The hub may keep the SSH channel's stdin open after sending the request."""
    req = worker.request()
    worker.users.add("alice")
    env = {
        **os.environ,
        "CLOUDJHUB_WORKER_ROOT": str(worker.root),
        "CLOUDJHUB_VOLUMES_DIR": str(worker.volumes),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudjhub.worker.agent", "start"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(req).encode() + b"\n")
        proc.stdin.flush()
        assert proc.wait(timeout=20) == 0
        out = json.loads(proc.stdout.read())
        worker.pids.add(out["pid"])
        assert process_running(out["pid"])
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_layout_defaults_and_device_candidates() -> None:
    real = agent.Layout.from_env({})
    assert real.root == Path("/") and not real.emulated
    emulated = agent.Layout.from_env({"CLOUDJHUB_WORKER_ROOT": "/srv/instances/i-1"})
    assert emulated.emulated
    assert emulated.volumes_dir == Path("/srv/instances/volumes")
    volume = agent.HomeVolume(volume_id="vol-0abc", device="/dev/sdf")
    assert agent.device_candidates(volume) == [
        Path("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc"),
        Path("/dev/sdf"),
        Path("/dev/xvdf"),
    ]


def test_wait_for_device_gives_up(tmp_path: Path) -> None:
    clock = iter(range(100))
    with pytest.raises(agent.AgentError, match="did not appear"):
        agent.wait_for_device(
            [tmp_path / "missing"], timeout=3, sleep=lambda _s: None, clock=lambda: next(clock)
        )
    present = tmp_path / "dev"
    present.touch()
    assert agent.wait_for_device([tmp_path / "missing", present], timeout=3) == present
