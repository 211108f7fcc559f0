"""Hibernation through `cloudjhub demo --hibernate`: a kernel survives stop and start.

Stopping the server hibernates the instance (StopInstances with Hibernate=True); the
fleet emulator suspends the machine's programs instead of ending them, and resumes
them on the next start. The agent then keeps the resumed Jupyter server (the hub
adopts the API token it runs with), so the very same kernel still holds a variable.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from cloudjhub.local.ports import free_port
from cloudjhub.remote import tcp_open
from tests.system.conftest import demo_credentials

pytestmark = [pytest.mark.system, pytest.mark.timeout(150)]

CLI = Path(sys.executable).with_name("cloudjhub")
# Never culled or self-stopped during the test.
IDLE_TIMEOUT = 600
VPC_CIDR = "127.188.0.0/16"


def proc_state(pid: int) -> str | None:
    """The process state letter (R, S, T for stopped, Z...), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@dataclass
class Demo:
    state_dir: Path
    hub_url: str
    token: str
    endpoint: str
    # Processes on instances that must not outlive the demo.
    pids: list[int] = field(default_factory=list)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else f"{self.hub_url}hub/api{path}"
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, url, headers=headers, timeout=60, **kwargs)

    def server(self, user: str) -> dict[str, Any] | None:
        return self.request("GET", f"/users/{user}").json()["servers"].get("")

    def start(self, user: str) -> None:
        self.request("POST", f"/users/{user}")
        reply = self.request("POST", f"/users/{user}/server")
        assert reply.status_code in (201, 202), reply.text
        wait_until(lambda: (self.server(user) or {}).get("ready"), 90, f"{user}'s server")

    def stop(self, user: str) -> None:
        reply = self.request("DELETE", f"/users/{user}/server")
        assert reply.status_code in (202, 204), reply.text
        wait_until(lambda: self.server(user) is None, 60, f"{user}'s server to stop")

    def server_tokens(self, user: str) -> list[str]:
        """Ids of the API tokens JupyterHub made for the user's server."""
        tokens = self.request("GET", f"/users/{user}/tokens").json()["api_tokens"]
        return [t["id"] for t in tokens if (t.get("note") or "").startswith("Server at ")]

    def instance(self, user: str) -> dict[str, Any]:
        ec2 = boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            **demo_credentials(self.state_dir),
        )
        reply = ec2.describe_instances(Filters=[{"Name": "tag:cloudjhub:user", "Values": [user]}])
        (found,) = [i for r in reply["Reservations"] for i in r["Instances"]]
        found["_volumes"] = ec2.describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [found["InstanceId"]]}]
        )["Volumes"]
        return found


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    state_dir = tmp_path / "demo"
    state_dir.mkdir()
    token = secrets.token_hex(16)
    env = {**os.environ, "CLOUDJHUB_DEMO_API_TOKEN": token}
    env.pop("AWS_ENDPOINT_URL", None)
    log = open(state_dir / "demo.out", "wb")  # noqa: SIM115
    port = free_port()
    argv = [str(CLI), "demo", "--hibernate", "--port", str(port)]
    argv += ["--idle-timeout", str(IDLE_TIMEOUT), "--state-dir", str(state_dir)]
    proc = subprocess.Popen([*argv, "--vpc-cidr", VPC_CIDR], env=env, stdout=log, stderr=log)
    info = state_dir / "demo.json"
    running: Demo | None = None
    try:
        deadline = time.monotonic() + 120
        while not info.exists():
            assert proc.poll() is None, (state_dir / "demo.out").read_text()
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.2)
        facts = json.loads(info.read_text())
        running = Demo(state_dir, facts["hub_url"], token, facts["aws_endpoint"])
        yield running
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
        pids = running.pids if running else []
        leftovers = [p for p in pids if proc_state(p) not in (None, "Z")]
        assert not leftovers, f"suspended processes outlived the demo: {leftovers}"


async def execute(demo: Demo, user: str, kernel_id: str, code: str) -> str:
    """Run code in a kernel over its websocket; return what it printed."""
    url = f"{demo.hub_url}user/{user}/api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(
        HTTPRequest(
            url.replace("http://", "ws://"), headers={"Authorization": f"token {demo.token}"}
        )
    )
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "session": uuid.uuid4().hex,
        "username": user,
        "msg_type": "execute_request",
        "version": "5.3",
    }
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}}
    await conn.write_message(
        json.dumps(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "content": {**content, "allow_stdin": False, "stop_on_error": True},
            }
        )
    )
    printed = ""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            raw = await conn.read_message()
            assert raw is not None, "kernel websocket closed"
            msg = json.loads(raw)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                printed += msg["content"]["text"]
            elif msg["msg_type"] == "error":
                raise AssertionError(f"kernel error: {msg['content']['evalue']}")
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return printed
    finally:
        conn.close()
    raise AssertionError("the kernel did not finish")


async def test_kernel_survives_a_hibernating_stop_and_start(demo: Demo) -> None:
    demo.start("hana")
    first = demo.instance("hana")
    iid, ip = first["InstanceId"], first["PrivateIpAddress"]
    assert first["HibernationOptions"] == {"Configured": True}
    (root_volume,) = first["_volumes"]
    # t3.medium has 4 GiB of RAM, on top of WORKER_EBS_SIZE 8.
    assert (root_volume["Size"], root_volume["Encrypted"]) == (12, True)

    state_file = demo.state_dir / "instances" / iid / "run" / "cloudjhub" / "hana.json"
    jupyter = json.loads(state_file.read_text())["pid"]
    kernels = f"{demo.hub_url}user/hana/api/kernels"
    kernel = demo.request("POST", kernels, json={"name": "python3"}).json()["id"]
    secret = uuid.uuid4().hex
    assert await execute(demo, "hana", kernel, f"secret = {secret!r}\nprint('set')") == "set\n"
    kernel_pids = children(jupyter)
    assert kernel_pids, "no kernel process under the Jupyter server"
    (server_token,) = demo.server_tokens("hana")
    demo.pids += [jupyter, *kernel_pids]

    demo.stop("hana")
    assert demo.instance("hana")["State"]["Name"] == "stopped"
    # Suspended, not ended: Jupyter and its kernel are stopped processes; sshd is gone.
    for pid in (jupyter, *kernel_pids):
        wait_until(lambda p=pid: proc_state(p) == "T", 15, f"process {pid} to be suspended")
    wait_until(lambda: not tcp_open(ip, 2222, timeout=0.5), 15, "sshd to end")

    began = time.monotonic()
    demo.start("hana")
    resumed_in = time.monotonic() - began
    assert demo.instance("hana")["InstanceId"] == iid
    for pid in (jupyter, *kernel_pids):
        assert proc_state(pid) not in (None, "T", "Z"), f"process {pid} did not resume"
    state = json.loads(state_file.read_text())
    assert state["pid"] == jupyter and state.get("resumed")
    # The hub adopted the token the resumed server runs with and dropped the new one.
    assert demo.server_tokens("hana") == [server_token]
    listed = [k["id"] for k in demo.request("GET", kernels).json()]
    assert listed == [kernel]
    assert await execute(demo, "hana", kernel, "print(secret)") == f"{secret}\n"
    print(f"\nhibernated server resumed with its kernel in {resumed_in:.1f}s")

    # Hibernated again at the end: the demo's teardown must end suspended programs too.
    demo.stop("hana")
    wait_until(lambda: proc_state(jupyter) == "T", 15, "Jupyter to be suspended again")
