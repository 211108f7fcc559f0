"""`cloudjhub demo`: the whole system on loopback, with no AWS account.

moto (or another EC2-compatible endpoint), the fleet emulator, and a real
JupyterHub with configurable-http-proxy, the InstanceSpawner and
jupyterhub-idle-culler. Everything started here is ended here, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..config import load_server_config
from ..ec2 import Ec2
from . import motoserver
from .cloud import VPC_CIDR, LocalNetwork, prepare_demo_cluster, prepare_network
from .emulator import FleetEmulator
from .sshd import end_pids

DEMO_CLUSTER = "demo"
EMULATED_SSH_PORT = 2222
TOKEN_ENV = "CLOUDJHUB_DEMO_API_TOKEN"  # noqa: S105 - a variable name
REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_proxy() -> str:
    """configurable-http-proxy from PATH or this checkout's node_modules."""
    for candidate in (
        os.environ.get("CLOUDJHUB_PROXY_COMMAND"),
        shutil.which("configurable-http-proxy"),
        str(REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "configurable-http-proxy not found: run `npm install` in the cloudjhub checkout "
        "or `npm install -g configurable-http-proxy`"
    )


def culler_every(timeout: int) -> int:
    """Check often enough that a server is culled within ~1.25 x the timeout."""
    return max(2, min(600, timeout // 4))


def hub_config(
    state_dir: Path, port: int, hub_port: int, proxy_api_port: int, idle_timeout: int
) -> str:
    worker = Path(sys.executable).with_name("cloudjhub-worker")
    every = culler_every(idle_timeout)
    lines = [
        "# Written by `cloudjhub demo`; rewritten on every start.",
        "import os",
        "c = get_config()  # noqa: F821",
        f"c.JupyterHub.bind_url = 'http://127.0.0.1:{port}'",
        "c.JupyterHub.hub_ip = '127.0.0.1'",
        f"c.JupyterHub.hub_port = {hub_port}",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{proxy_api_port}'",
        f"c.ConfigurableHTTPProxy.command = [{find_proxy()!r}]",
        f"c.ConfigurableHTTPProxy.pid_file = {str(state_dir / 'proxy.pid')!r}",
        f"c.JupyterHub.db_url = 'sqlite:///{state_dir / 'jupyterhub.sqlite'}'",
        f"c.JupyterHub.cookie_secret_file = {str(state_dir / 'jupyterhub_cookie_secret')!r}",
        f"c.JupyterHub.pid_file = {str(state_dir / 'jupyterhub.pid')!r}",
        "c.JupyterHub.cleanup_servers = False",
        f"c.JupyterHub.last_activity_interval = {every}",
        "c.JupyterHub.authenticator_class = 'dummy'",
        "c.Authenticator.allow_all = True",
        "c.Authenticator.admin_users = {'admin'}",
        "c.JupyterHub.spawner_class = 'cloudjhub'",
        f"c.InstanceSpawner.server_config_file = {str(state_dir / 'server_config.json')!r}",
        f"c.InstanceSpawner.worker_command = [{str(worker)!r}]",
        "c.InstanceSpawner.state_poll_interval = 0.5",
        "c.InstanceSpawner.ssh_retry_interval = 0.5",
        "c.InstanceSpawner.fleet_refresh_interval = 5",
        "c.InstanceSpawner.hang_grace = 30",
        "c.JupyterHub.services = [",
        "    {'name': 'idle-culler', 'command': [",
        f"        {sys.executable!r}, '-m', 'jupyterhub_idle_culler',",
        f"        '--timeout={idle_timeout}', '--cull-every={every}',",
        "    ]},",
        "]",
        "c.JupyterHub.load_roles = [",
        "    {'name': 'idle-culler', 'services': ['idle-culler'], 'scopes': [",
        "        'list:users', 'read:users:activity', 'read:servers', 'delete:servers']},",
        "]",
        f"if os.environ.get({TOKEN_ENV!r}):",
        "    c.JupyterHub.services.append(",
        f"        {{'name': 'demo-admin', 'api_token': os.environ[{TOKEN_ENV!r}]}})",
        "    c.JupyterHub.load_roles.append({'name': 'admin', 'services': ['demo-admin']})",
        "",
    ]
    return "\n".join(lines)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback URL we built
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the hub exited with status {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.2)


@dataclass
class DemoStack:
    state_dir: Path
    port: int = 8000
    idle_timeout: int | None = None
    api_token: str | None = None
    aws_endpoint: str | None = None
    say: object = print
    region: str = "us-east-1"
    vpc_cidr: str = VPC_CIDR
    moto: motoserver.LocalEc2 | None = None
    emulator: FleetEmulator | None = None
    hub: subprocess.Popen[bytes] | None = None
    network: LocalNetwork | None = None
    hub_url: str = ""
    _log: object = field(default=None, repr=False)

    def _say(self, message: str) -> None:
        self.say(message)  # type: ignore[operator]

    def start_cloud(self) -> Ec2:
        """EC2 endpoint, prepared network and the fleet emulator."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.aws_endpoint:
            endpoint = self.aws_endpoint
        else:
            # moto's state lives in this process: what an earlier run left on
            # disk describes instances that no longer exist.
            for stale in ("instances", "volumes", "jupyterhub.sqlite", "known_hosts"):
                path = self.state_dir / stale
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            self.moto = motoserver.LocalEc2()
            endpoint = self.moto.start()
            self._say(f"EC2 (moto) listening on {endpoint}")
        for key, value in motoserver.LOCAL_CREDENTIALS.items():
            os.environ.setdefault(key, value)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        ec2 = Ec2.connect(DEMO_CLUSTER, self.region, endpoint)
        self.network = prepare_network(ec2, endpoint, self.region, self.state_dir, self.vpc_cidr)
        self.emulator = FleetEmulator(
            ec2, self.state_dir, EMULATED_SSH_PORT, publish_console=self.moto is not None
        )
        self.emulator.start()
        return ec2

    def start(self) -> None:
        ec2 = self.start_cloud()
        assert self.network is not None
        timeout = self.idle_timeout
        if timeout is None:
            existing = self.state_dir / "server_config.json"
            timeout = (
                load_server_config(existing).JUPYTER_NOTEBOOK_TIMEOUT if existing.exists() else 3600
            )
        config = prepare_demo_cluster(
            ec2,
            self.network,
            self.state_dir,
            EMULATED_SSH_PORT,
            timeout,
            host_key_source="console" if self.moto is not None else "known_hosts",
            progress=self._say,
        )
        hub_port, proxy_port = free_port(), free_port()
        cfg = self.state_dir / "jupyterhub_config.py"
        cfg.write_text(hub_config(self.state_dir, self.port, hub_port, proxy_port, timeout))
        env = dict(os.environ)
        env["CLOUDJHUB_SERVER_CONFIG"] = str(config)
        if self.api_token:
            env[TOKEN_ENV] = self.api_token
        log = open(self.state_dir / "jupyterhub.log", "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        cmd = [sys.executable, "-m", "jupyterhub", "-f", str(cfg)]
        self.hub = subprocess.Popen(
            cmd, cwd=self.state_dir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.hub_url = f"http://127.0.0.1:{self.port}/"
        wait_http(f"{self.hub_url}hub/health", 120, self.hub)
        (self.state_dir / "demo.json").write_text(
            json.dumps(
                {
                    "hub_url": self.hub_url,
                    "aws_endpoint": self.network.endpoint,
                    "region": self.region,
                    "cluster": DEMO_CLUSTER,
                    "hub_pid": self.hub.pid,
                    "demo_pid": os.getpid(),
                },
                indent=2,
            )
        )

    def stop(self) -> None:
        if self.hub is not None and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
        self._end_leftover_proxy()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
        if self.emulator is not None:
            self.emulator.stop()
        if self.moto is not None:
            self.moto.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "demo.json").unlink()

    def _end_leftover_proxy(self) -> None:
        """The hub stops the proxy it started, unless it died first."""
        pid_file = self.state_dir / "proxy.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"configurable-http-proxy" in cmdline:
                end_pids([pid])
            pid_file.unlink()
