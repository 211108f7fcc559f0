"""Shared by the system tests: `cloudjhub demo` as a subprocess, driven through the
hub's REST API, and ended (with everything it started) by pid."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from cloudjhub.local.ports import free_port
from cloudjhub.remote import tcp_open
from tests.helpers import alive

CLI = Path(sys.executable).with_name("cloudjhub")


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

    def facts(self) -> dict[str, Any]:
        """demo.json as it is now (the hub's pid changes when the demo restarts it)."""
        return json.loads((self.state_dir / "demo.json").read_text())

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else self.api + path
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, url, headers=headers, timeout=60, **kwargs)

    def credentials(self) -> dict[str, str]:
        """The embedded endpoint's credentials, from the demo's 0600 file."""
        return demo_credentials(self.state_dir)

    def ec2(self, **kwargs: Any) -> Any:
        return boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            **self.credentials(),
            **kwargs,
        )

    def password(self, who: str = "user") -> str:
        """The sign-in password of `admin` (who="admin") or of everyone else."""
        return (self.state_dir / f"{who}_password").read_text().strip()

    def instances(self, user: str) -> list[dict[str, Any]]:
        reply = self.ec2().describe_instances(
            Filters=[{"Name": "tag:cloudjhub:user", "Values": [user]}]
        )
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    def server(self, user: str) -> dict[str, Any] | None:
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
        return str(instance["State"]["Name"])

    def wait_state(self, user: str, state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.state_of(user) != state:
            assert time.monotonic() < deadline, f"{user}'s instance is {self.state_of(user)}"
            time.sleep(0.5)


def demo_credentials(state_dir: Path) -> dict[str, str]:
    """boto3 keyword arguments for the demo's own EC2 endpoint (its aws-credentials file)."""
    parser = configparser.ConfigParser()
    parser.read(state_dir / "aws-credentials")
    section = parser["default"]
    return {
        "aws_access_key_id": section["aws_access_key_id"],
        "aws_secret_access_key": section["aws_secret_access_key"],
    }


def _sshd_ip(root: Path) -> str | None:
    cfg = root / "etc" / "ssh" / "sshd_config"
    if not cfg.exists():
        return None
    for line in cfg.read_text().splitlines():
        if line.startswith("ListenAddress "):
            return line.split()[1].rsplit(":", 1)[0]
    return None


def launch_demo(
    state_dir: Path,
    idle_timeout: int,
    vpc_cidr: str,
    *extra: str,
    env: dict[str, str] | None = None,
) -> Demo:
    """Start `cloudjhub demo` and wait until its hub answers."""
    from secrets import token_hex

    token = token_hex(16)
    port = free_port()
    full_env = {**os.environ, "CLOUDJHUB_DEMO_API_TOKEN": token, **(env or {})}
    if env is None or "AWS_ENDPOINT_URL" not in env:
        full_env.pop("AWS_ENDPOINT_URL", None)
    with open(state_dir / "demo.out", "wb") as log:
        proc = subprocess.Popen(
            [
                str(CLI),
                "demo",
                "--port",
                str(port),
                "--idle-timeout",
                str(idle_timeout),
                "--state-dir",
                str(state_dir),
                "--vpc-cidr",
                vpc_cidr,
                *extra,
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    info = state_dir / "demo.json"
    deadline = time.monotonic() + 180
    while not info.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("demo did not start:\n" + (state_dir / "demo.out").read_text())
        time.sleep(0.2)
    facts = json.loads(info.read_text())
    return Demo(proc, state_dir, facts["hub_url"], token, facts["aws_endpoint"])


def leftovers(demo: Demo, hub_pids: set[int]) -> list[str]:
    """What the demo started that is still alive or listening (should be nothing)."""
    found = [f"hub {pid}" for pid in hub_pids if alive(pid)]
    for marker in (f"CLOUDJHUB_DEMO_HUB={demo.state_dir}", f"CLOUDJHUB_FLEET={demo.state_dir}"):
        needle = marker.encode() + b"\0"
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if (
                    entry.name.isdigit()
                    and needle in (entry / "environ").read_bytes()
                    and alive(int(entry.name))
                ):
                    found.append(f"process {entry.name} with {marker}")
    port = int(demo.hub_url.rsplit(":", 1)[1].strip("/"))
    if tcp_open("127.0.0.1", port, timeout=0.5):
        found.append(f"the hub's port {port}")
    for root in (demo.state_dir / "instances").glob("i-*"):
        ip = _sshd_ip(root)
        if ip:
            if tcp_open(ip, 2222, timeout=0.5):
                found.append(f"sshd of {root.name}")
            if tcp_open(ip, 8888, timeout=0.5):
                found.append(f"Jupyter of {root.name}")
    return found


@contextlib.contextmanager
def running_demo(state_dir: Path, idle_timeout: int, vpc_cidr: str, *extra: str) -> Iterator[Demo]:
    """`cloudjhub demo` (with `extra` options) until the block ends; then SIGTERM it and
    check that nothing it started (hub, proxy, services, sshd, Jupyter) is left."""
    demo = launch_demo(state_dir, idle_timeout, vpc_cidr, *extra)
    hub_pids = {demo.facts()["hub_pid"]}
    try:
        yield demo
    finally:
        with contextlib.suppress(OSError, ValueError, KeyError):
            hub_pids.add(demo.facts()["hub_pid"])
        demo.proc.send_signal(signal.SIGTERM)
        try:
            status = demo.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            demo.proc.kill()
            demo.proc.wait()
            raise
        assert status == 0, (state_dir / "demo.out").read_text()
        assert leftovers(demo, hub_pids) == []


@pytest.fixture(scope="module")
def demo_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[int, str], Demo]]:
    """Start a demo with (idle timeout, loopback /16); ended when the module is done."""
    with contextlib.ExitStack() as stack:

        def start(idle_timeout: int, vpc_cidr: str) -> Demo:
            state_dir = tmp_path_factory.mktemp("demo")
            return stack.enter_context(running_demo(state_dir, idle_timeout, vpc_cidr))

        yield start


@contextlib.contextmanager
def plain_moto_server(log_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A plain moto server in its own process: an EC2 endpoint no demo owns, as
    `--aws-endpoint` would name. Yields the process and its URL; killed at the end."""
    port = free_port()
    with open(log_dir / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not tcp_open("127.0.0.1", port, timeout=0.5):
            assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.2)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
