"""The whole system through `cloudjhub demo`: a real hub, proxy, culler, sshd and
single-user servers, with EC2 played by moto and the fleet emulator."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from cloudjhub.remote import tcp_open

pytestmark = pytest.mark.system

IDLE_TIMEOUT = 15
# Its own loopback range, so it never meets another local cloud on this machine.
VPC_CIDR = "127.201.0.0/16"
CLI = Path(sys.executable).with_name("cloudjhub")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    hub_url: str
    token: str
    endpoint: str

    @property
    def api(self) -> str:
        return self.hub_url + "hub/api"

    def request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        url = path if path.startswith("http") else self.api + path
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, url, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]

    def ec2(self) -> object:
        return boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id="local-demo",
            aws_secret_access_key="local-demo",
        )

    def instances(self, user: str) -> list[dict[str, object]]:
        reply = self.ec2().describe_instances(  # type: ignore[attr-defined]
            Filters=[{"Name": "tag:cloudjhub:user", "Values": [user]}]
        )
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    def server(self, user: str) -> dict[str, object] | None:
        model = self.request("GET", f"/users/{user}").json()
        return model["servers"].get("")

    def start(self, user: str) -> float:
        """Start user's server and wait until ready; return seconds taken."""
        self.request("POST", f"/users/{user}")
        began = time.monotonic()
        reply = self.request("POST", f"/users/{user}/server")
        assert reply.status_code in (201, 202), reply.text
        deadline = began + 120
        while time.monotonic() < deadline:
            server = self.server(user)
            if server and server.get("ready"):
                return time.monotonic() - began
            assert server is not None, f"{user}'s spawn failed; see {self.state_dir}/jupyterhub.log"
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server was not ready within 120 s")

    def stop(self, user: str) -> None:
        reply = self.request("DELETE", f"/users/{user}/server")
        assert reply.status_code in (202, 204), reply.text
        deadline = time.monotonic() + 60
        while self.server(user) is not None:
            assert time.monotonic() < deadline, f"{user}'s server did not stop"
            time.sleep(0.2)

    def state_of(self, user: str) -> str:
        (instance,) = self.instances(user)
        return instance["State"]["Name"]  # type: ignore[index]

    def wait_state(self, user: str, state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.state_of(user) != state:
            assert time.monotonic() < deadline, f"{user}'s instance is {self.state_of(user)}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    state_dir = tmp_path_factory.mktemp("demo")
    token = secrets.token_hex(16)
    port = free_port()
    env = {**os.environ, "CLOUDJHUB_DEMO_API_TOKEN": token}
    env.pop("AWS_ENDPOINT_URL", None)
    log = open(state_dir / "demo.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(CLI),
            "demo",
            "--port",
            str(port),
            "--idle-timeout",
            str(IDLE_TIMEOUT),
            "--state-dir",
            str(state_dir),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    info = state_dir / "demo.json"
    deadline = time.monotonic() + 180
    while not info.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("demo did not start:\n" + (state_dir / "demo.out").read_text())
        time.sleep(0.2)
    facts = json.loads(info.read_text())
    demo = Demo(proc, state_dir, facts["hub_url"], token, facts["aws_endpoint"])
    try:
        yield demo
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            log.close()
        assert status == 0, (state_dir / "demo.out").read_text()
        # Nothing the demo started may outlive it.
        for pid in (facts["hub_pid"],):
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        assert not tcp_open("127.0.0.1", port, timeout=0.5)
        for root in (state_dir / "instances").glob("i-*"):
            ip = _sshd_ip(root)
            if ip:
                assert not tcp_open(ip, 2222, timeout=0.5), f"sshd of {root.name} still up"
                assert not tcp_open(ip, 8888, timeout=0.5), f"Jupyter of {root.name} still up"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _sshd_ip(root: Path) -> str | None:
    cfg = root / "etc" / "ssh" / "sshd_config"
    if not cfg.exists():
        return None
    for line in cfg.read_text().splitlines():
        if line.startswith("ListenAddress "):
            return line.split()[1].rsplit(":", 1)[0]
    return None


def test_two_users_get_their_own_instances_and_files_survive_stop(demo: Demo) -> None:
    first = demo.start("alice")
    demo.start("bob")
    (alice_instance,) = demo.instances("alice")
    (bob_instance,) = demo.instances("bob")
    assert alice_instance["InstanceId"] != bob_instance["InstanceId"]
    assert alice_instance["PrivateIpAddress"] != bob_instance["PrivateIpAddress"]

    for user in ("alice", "bob"):
        status = demo.request("GET", f"{demo.hub_url}user/{user}/api/status")
        assert status.status_code == 200, status.text
        assert "started" in status.json()

    note = {"type": "file", "format": "text", "content": f"written {uuid.uuid4()}"}
    put = demo.request("PUT", f"{demo.hub_url}user/alice/api/contents/note.txt", json=note)
    assert put.status_code in (200, 201), put.text

    demo.stop("alice")
    demo.wait_state("alice", "stopped")
    assert demo.state_of("bob") == "running"
    deadline = time.monotonic() + 15
    while tcp_open(alice_instance["PrivateIpAddress"], 8888, timeout=0.5):
        assert time.monotonic() < deadline, "Jupyter still answers on a stopped instance"
        time.sleep(0.2)

    again = demo.start("alice")
    (restarted,) = demo.instances("alice")
    assert restarted["InstanceId"] == alice_instance["InstanceId"]
    got = demo.request("GET", f"{demo.hub_url}user/alice/api/contents/note.txt").json()
    assert got["content"] == note["content"]
    print(f"\nspawn-to-ready: first start {first:.1f}s, restart {again:.1f}s")
    demo.stop("alice")
    demo.stop("bob")


async def _start_busy_kernel(demo: Demo, user: str) -> str:
    base = f"{demo.hub_url}user/{user}/api/kernels"
    kernel = demo.request("POST", base, json={"name": "python3"}).json()
    ws_url = base.replace("http://", "ws://") + f"/{kernel['id']}/channels"
    conn = await websocket_connect(
        HTTPRequest(ws_url, headers={"Authorization": f"token {demo.token}"})
    )
    session = uuid.uuid4().hex
    msg_id = uuid.uuid4().hex
    await conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "session": session,
                    "username": user,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "content": {
                    # Silent work: no output, so only "busy" shows it is alive.
                    "code": "import time\nwhile True:\n    time.sleep(1)\n",
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        raw = await conn.read_message()
        assert raw is not None, "kernel websocket closed"
        msg = json.loads(raw)
        if (
            msg.get("msg_type") == "status"
            and msg["parent_header"].get("msg_id") == msg_id
            and msg["content"]["execution_state"] == "busy"
        ):
            conn.close()
            return str(kernel["id"])
    raise AssertionError("kernel never went busy")


async def test_idle_server_is_culled_and_busy_kernel_is_not(demo: Demo) -> None:
    demo.start("carol")
    demo.start("dave")
    await _start_busy_kernel(demo, "dave")
    began = time.monotonic()
    # carol does nothing: the culler must stop her server and her instance.
    deadline = began + IDLE_TIMEOUT * 4 + 30
    while demo.server("carol") is not None:
        assert time.monotonic() < deadline, "carol's idle server was not culled"
        time.sleep(1)
    demo.wait_state("carol", "stopped")
    culled_after = time.monotonic() - began
    # dave's kernel is computing: his server must still be there, well past the timeout.
    while time.monotonic() - began < IDLE_TIMEOUT * 2.5:
        time.sleep(1)
    assert demo.server("dave") is not None, "a busy kernel's server was culled"
    assert demo.state_of("dave") == "running"
    print(f"\nidle server culled and instance stopped {culled_after:.1f}s after last activity")
    demo.stop("dave")
    demo.wait_state("dave", "stopped")
