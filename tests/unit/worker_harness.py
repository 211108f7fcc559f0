"""Run ``cloudjhub-worker`` as a real subprocess against a temporary instance root.

Two fake Jupyter servers: one that only listens (``Worker``), and one that answers
``/api/status`` only with the API token it was started with, next to a fake hub that
tests take down (``Instance``, ``FakeHub``). Everything a test starts is ended by pid.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudjhub.local.ports import free_port
from tests.helpers import alive

AGENT = [sys.executable, "-m", "cloudjhub.worker.cli"]
SECRET = "s3cr3t-token-value-0123456789"
TOKEN = "watchdog-test-token-0123456789abcdef"

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


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Worker:
    """Runs the agent against a temporary instance root and remembers what it started."""

    tmp: Path
    root: Path
    volumes: Path
    pids: set[int] = field(default_factory=set)
    users: set[str] = field(default_factory=set)

    @classmethod
    def running(cls, tmp: Path) -> Iterator[Worker]:
        """For a fixture: yield a worker, then end whatever it started."""
        worker = cls(tmp=tmp, root=tmp / "instance", volumes=tmp / "volumes")
        try:
            yield worker
        finally:
            worker.cleanup()

    def run(
        self, *args: str, request: dict[str, Any] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["CLOUDJHUB_WORKER_ROOT"] = str(self.root)
        env["CLOUDJHUB_VOLUMES_DIR"] = str(self.volumes)
        env["CLOUDJHUB_TEST_LEAK"] = "must-not-reach-the-server"
        return subprocess.run(
            [*AGENT, *args],
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

    def record_file(self, user: str) -> Path:
        return self.root / "run" / "cloudjhub" / f"{user}.json"

    def log_file(self, user: str) -> Path:
        return self.root / "var" / "log" / "cloudjhub" / f"{user}.log"

    def cleanup(self) -> None:
        for user in self.users:
            self.run("stop", "--user", user, "--timeout", "2")
        for pid in self.pids:
            if alive(pid):
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(OSError):
                        kill(pid, signal.SIGKILL)


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

    @classmethod
    def running(cls) -> Iterator[FakeHub]:
        """For a fixture: yield a hub, then stop it."""
        fake = cls()
        try:
            yield fake
        finally:
            fake.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Instance:
    """An instance root whose server answers /api/status and reports to a hub."""

    tmp: Path
    pids: set[int] = field(default_factory=set)

    @classmethod
    def running(cls, tmp: Path) -> Iterator[Instance]:
        """For a fixture: yield an instance, then end whatever it started."""
        inst = cls(tmp)
        try:
            yield inst
        finally:
            inst.cleanup()

    @property
    def root(self) -> Path:
        return self.tmp / "instance"

    def run(self, *args: str, request: dict[str, Any] | None = None) -> Any:
        env = {**os.environ, "CLOUDJHUB_WORKER_ROOT": str(self.root)}
        env["CLOUDJHUB_VOLUMES_DIR"] = str(self.tmp / "volumes")
        return subprocess.run(
            [*AGENT, *args],
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

    def record(self) -> dict[str, Any]:
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
            if alive(pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
