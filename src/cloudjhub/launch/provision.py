"""Reaching a builder or manager over SSH, and installing its OS packages.

The OS install scripts are files in the package (`launch/scripts/`); the
same cloudjhub version as the launching checkout goes with them, as a wheel
built here, so manager, workers and launcher always agree.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import remote
from ..aws.admin import AdminEc2
from ..aws.client import CloudError, Instance

SCRIPTS = Path(__file__).resolve().parent / "scripts"
REPO_ROOT = Path(__file__).resolve().parents[3]


def sudo_for(login: str) -> list[str]:
    """What runs a command as root for this login user (root needs nothing)."""
    return [] if login == "root" else ["sudo", "-n"]


@dataclass
class Node:
    """One instance the launcher talks to, with host keys pinned from its console."""

    instance: Instance
    ec2: AdminEc2
    login: str
    key_file: str
    port: int
    connect_via: str
    known_hosts: Path | None
    timeout: float
    poll: float
    say: Callable[[str], None]
    _keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def host(self) -> str:
        ip = self.instance.private_ip if self.connect_via == "private" else self.instance.public_ip
        if not ip:
            raise CloudError(f"{self.instance.id} has no {self.connect_via} IP address")
        return ip

    @property
    def sudo(self) -> list[str]:
        return sudo_for(self.login)

    def _pin(self) -> tuple[str, ...]:
        if self._keys:
            return self._keys
        deadline = time.monotonic() + self.timeout
        while True:
            if self.known_hosts is not None:
                keys = remote.read_known_hosts(self.known_hosts, self.host, self.port)
            else:
                keys = remote.parse_console_host_keys(self.ec2.console_output(self.instance.id))
            if keys:
                self._keys = tuple(keys)
                return self._keys
            if time.monotonic() > deadline:
                source = self.known_hosts or "its console output"
                raise CloudError(f"{self.instance.id} published no SSH host key in {source}")
            self.say(f"  waiting for {self.instance.id} to publish its SSH host key")
            time.sleep(max(self.poll, 1.0))

    def target(self) -> remote.Target:
        return remote.Target(self.host, self.port, self.login, self.key_file, self._pin())

    def wait_for_ssh(self) -> None:
        deadline = time.monotonic() + self.timeout
        target = self.target()
        while True:
            try:
                if remote.run_on(target, ["true"], timeout=30).status == 0:
                    return
            except remote.Unreachable:
                pass
            if time.monotonic() > deadline:
                raise CloudError(f"{self.instance.id} ({self.host}) does not answer SSH")
            self.say(f"  waiting for SSH on {self.instance.id} ({self.host}:{self.port})")
            time.sleep(max(self.poll, 1.0))

    def run(self, argv: list[str], stdin: str = "", timeout: float = 1800) -> remote.CommandResult:
        return remote.run_on(self.target(), argv, stdin.encode(), timeout)


def build_wheel(out_dir: Path) -> Path:
    """A wheel of the launching checkout (pip's own build, from PyPI's setuptools)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(out_dir),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(out_dir.glob("cloudjhub-*.whl"))
    if done.returncode != 0 or not wheels:
        raise CloudError(f"building the cloudjhub wheel failed: {done.stderr.strip()[-1000:]}")
    return wheels[-1]


def package_for(node: Node) -> str:
    """This checkout's wheel, copied to the instance; the install script removes it.

    There is no fallback to `pip install cloudjhub==VERSION` from an index: that
    would install, as root on the machine holding the IAM role, whatever the
    index serves under that name."""
    if not (REPO_ROOT / "pyproject.toml").exists():
        raise CloudError(
            "OS package installation needs a cloudjhub checkout to build the wheel from; "
            "run the launcher from a checkout, or use a base image with cloudjhub preinstalled"
        )
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        remote_path = f"/tmp/{wheel.name}"  # noqa: S108 - the install script deletes it
        remote.put_file(node.target(), wheel, remote_path)
    return remote_path


def install_os_packages(node: Node, script: str, env: dict[str, str]) -> None:
    node.say(f"  installing OS packages on {node.instance.id} ({script}); this takes minutes")
    variables = {"CLOUDJHUB_PACKAGE": package_for(node), **env}
    argv = [*node.sudo, "env", *(f"{k}={v}" for k, v in variables.items()), "bash", "-s"]
    result = node.run(argv, (SCRIPTS / script).read_text())
    if result.status != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise CloudError(f"{script} failed on {node.instance.id} (status {result.status}):\n{tail}")
