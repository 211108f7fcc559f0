"""``cloudjhub-worker``'s watchdog and resume, run as real processes in emulated mode.

The "Jupyter server" is a small HTTP server that answers ``/api/status`` only with
the API token it was started with; the "hub" is an HTTP server in this process that
the tests take down. Every process started is ended by pid in teardown.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TOKEN = "watchdog-test-token-0123456789abcdef"

FAKE_JUPYTER = """
import datetime, http.server, json, os, sys
ip, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
token = os.environ["JUPYTERHUB_API_TOKEN"]
prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
started = datetime.datetime.now(datetime.timezone.utc)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != prefix + "api/status":
            self.send_error(404)
        elif self.headers.get("Authorization") != "token " + token:
            self.send_error(403)
        else:
            now = datetime.datetime.now(datetime.timezone.utc)
            last = now if mode == "busy" else started - datetime.timedelta(hours=1)
            body = json.dumps({"last_activity": last.isoformat().replace("+00:00", "Z")})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    def log_message(self, *args):
        pass

http.server.HTTPServer((ip, port), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZXx"


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class FakeHub:
    """Answers 200 on /hub/api/ until stopped."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/hub/api/" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Instance:
    tmp: Path
    pids: set[int] = field(default_factory=set)

    @property
    def root(self) -> Path:
        return self.tmp / "instance"

    def run(self, *args: str, request: dict[str, Any] | None = None) -> Any:
        env = {**os.environ, "CLOUDJHUB_WORKER_ROOT": str(self.root)}
        env["CLOUDJHUB_VOLUMES_DIR"] = str(self.tmp / "volumes")
        return subprocess.run(
            [sys.executable, "-m", "cloudjhub.worker.agent", *args],
            input=json.dumps(request) if request is not None else "",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    def request(self, mode: str, hub_url: str, **overrides: Any) -> dict[str, Any]:
        script = self.tmp / "fake_jupyter.py"
        script.write_text(FAKE_JUPYTER)
        port = overrides.pop("port", None) or free_port()
        req: dict[str, Any] = {
            "user": "alice",
            "ip": "127.0.0.1",
            "port": port,
            "env": {
                "JUPYTERHUB_API_TOKEN": TOKEN,
                "JUPYTERHUB_API_URL": hub_url,
                "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
            },
            "cmd": [sys.executable, str(script), "127.0.0.1", str(port), mode],
            "timeout": 20,
            "idle_timeout": 1,
            "self_stop_grace": 1,
        }
        req.update(overrides)
        return req

    def start(self, req: dict[str, Any]) -> dict[str, Any]:
        done = self.run("start", request=req)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        self.pids.add(out["pid"])
        self.pids.update(self.agent_pids())
        return out

    def agent_pids(self) -> list[int]:
        return [int(p) for p in json.loads(self.run("pids").stdout)]

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / "run" / "cloudjhub" / "alice.json").read_text())

    @property
    def shutdown_request(self) -> Path:
        return self.root / "run" / "shutdown"

    @property
    def watch_log(self) -> Path:
        return self.root / "var" / "log" / "cloudjhub" / "alice.watch.log"

    def assert_token_nowhere_on_disk(self) -> None:
        for path in self.root.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path
                assert b"a-new-token" not in path.read_bytes(), path

    def cleanup(self) -> None:
        self.run("stop", "--user", "alice", "--timeout", "2")
        for pid in self.pids:
            if running(pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    inst = Instance(tmp_path)
    try:
        yield inst
    finally:
        inst.cleanup()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    try:
        yield fake
    finally:
        fake.stop()


def test_idle_server_shuts_its_machine_down(instance: Instance, hub: FakeHub) -> None:
    out = instance.start(instance.request("idle", hub.url))
    assert set(out) == {"pid", "ip", "port"}
    state = instance.state()
    dog = state["watchdog"]["pid"]
    assert sorted(instance.agent_pids()) == sorted([out["pid"], dog])
    assert state["watch"]["limit"] == 2
    assert state["watch"]["status_url"].endswith(f":{out['port']}/user/alice/api/status")

    wait_for(instance.shutdown_request.exists, 30, "the shutdown request")
    assert "no activity" in instance.shutdown_request.read_text()
    wait_for(lambda: not running(dog), 10, "the watchdog to end")
    assert "shutting the instance down: no activity" in instance.watch_log.read_text()
    instance.assert_token_nowhere_on_disk()


def test_busy_server_without_hub_shuts_down_for_the_hub(instance: Instance, hub: FakeHub) -> None:
    """A busy server is read with its token (else the reason would be idleness)."""
    instance.start(instance.request("busy", hub.url))
    dog = instance.state()["watchdog"]["pid"]
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
    dog = instance.state()["watchdog"]["pid"]
    stopped = instance.run("stop", "--user", "alice")
    assert json.loads(stopped.stdout) == {"stopped": True}
    wait_for(lambda: not running(dog), 10, "the watchdog to end")

    out = instance.start(instance.request("idle", hub.url, idle_timeout=0))
    assert instance.state()["watchdog"] is None
    assert instance.agent_pids() == [out["pid"]]


def test_resume_keeps_the_same_server_and_returns_its_token(
    instance: Instance, hub: FakeHub
) -> None:
    first = instance.request("busy", hub.url, resume=True, idle_timeout=600)
    out = instance.start(first)
    old_dog = instance.state()["watchdog"]["pid"]

    again = {**first, "env": {**first["env"], "JUPYTERHUB_API_TOKEN": "a-new-token"}}
    resumed = instance.start(again)
    assert resumed == {
        "pid": out["pid"],
        "ip": "127.0.0.1",
        "port": first["port"],
        "resumed": True,
        "api_token": TOKEN,
    }
    assert running(out["pid"])
    state = instance.state()
    assert state["resumed"] >= state["started"]
    assert state["watchdog"]["pid"] != old_dog and running(state["watchdog"]["pid"])
    wait_for(lambda: not running(old_dog), 10, "the old watchdog to end")

    # A different server (here: another setting) is started afresh, with the new token.
    changed = {**again, "env": {**again["env"], "JUPYTERHUB_ACTIVITY_INTERVAL": "7"}}
    fresh = instance.start(changed)
    assert set(fresh) == {"pid", "ip", "port"} and fresh["pid"] != out["pid"]
    wait_for(lambda: not running(out["pid"]), 10, "the old server to end")
    instance.assert_token_nowhere_on_disk()


def test_without_resume_a_running_server_is_replaced(instance: Instance, hub: FakeHub) -> None:
    out = instance.start(instance.request("busy", hub.url, idle_timeout=600))
    again = instance.start(instance.request("busy", hub.url, idle_timeout=600))
    assert again["pid"] != out["pid"] and "api_token" not in again


@pytest.mark.parametrize(
    ("field", "value"),
    [("idle_timeout", -1), ("idle_timeout", "60"), ("self_stop_grace", 1.5), ("resume", "yes")],
)
def test_bad_self_stop_fields_are_rejected(
    instance: Instance, hub: FakeHub, field: str, value: object
) -> None:
    done = instance.run("start", request=instance.request("idle", hub.url, **{field: value}))
    assert done.returncode == 2
    assert f"invalid {field}" in done.stderr
