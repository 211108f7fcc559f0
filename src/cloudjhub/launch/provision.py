"""Reaching a builder or manager over SSH, and installing its OS packages.

The OS install scripts are files in the package (`launch/scripts/`); the
same cloudjhub version as the launching checkout goes with them, as a wheel
built here, so manager, workers and launcher always agree.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import remote
from ..aws.admin import AdminEc2
from ..aws.client import CloudError, Instance
from ..waiting import TimedOut, poll_until

SCRIPTS = Path(__file__).resolve().parent / "scripts"
OS_PACKAGES = "os-packages.sh"
REPO_ROOT = Path(__file__).resolve().parents[3]
# SSH waits look at most once a second, however short the launch's poll.
MIN_SSH_POLL = 1.0


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

    def _wait(self, check: Callable[[], object], waiting: str, failed: str) -> None:
        """Poll `check` until it is truthy, saying `waiting` between looks."""
        try:
            poll_until(
                check,
                timeout=self.timeout,
                interval=max(self.poll, MIN_SSH_POLL),
                progress=lambda _value, _elapsed: self.say(f"  {waiting}"),
            )
        except TimedOut as late:
            raise CloudError(failed) from late

    def _pin(self) -> tuple[str, ...]:
        if self._keys:
            return self._keys

        def keys() -> tuple[str, ...]:
            if self.known_hosts is not None:
                found = remote.read_known_hosts(self.known_hosts, self.host, self.port)
            else:
                found = remote.parse_console_host_keys(
                    self.ec2.console_output(self.instance.id, self.instance.instance_type)
                )
            self._keys = tuple(found)
            return self._keys

        source = self.known_hosts or "its console output"
        self._wait(
            keys,
            f"waiting for {self.instance.id} to publish its SSH host key",
            f"{self.instance.id} published no SSH host key in {source}",
        )
        return self._keys

    def target(self) -> remote.Target:
        return remote.Target(self.host, self.port, self.login, self.key_file, self._pin())

    def wait_for_ssh(self) -> None:
        target = self.target()

        def answers() -> bool:
            try:
                return remote.run_on(target, ["true"], timeout=30).status == 0
            except remote.Unreachable:
                return False

        self._wait(
            answers,
            f"waiting for SSH on {self.instance.id} ({self.host}:{self.port})",
            f"{self.instance.id} ({self.host}) does not answer SSH",
        )

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


def script_text(script: str) -> str:
    """An install script as it is run: after OS_PACKAGES, the functions that know
    each supported OS's package manager and package names."""
    return (SCRIPTS / OS_PACKAGES).read_text() + "\n" + (SCRIPTS / script).read_text()


def install_os_packages(node: Node, script: str, env: dict[str, str]) -> None:
    node.say(f"  installing OS packages on {node.instance.id} ({script}); this takes minutes")
    variables = {"CLOUDJHUB_PACKAGE": package_for(node), **env}
    argv = [*node.sudo, "env", *(f"{k}={v}" for k, v in variables.items()), "bash", "-s"]
    result = node.run(argv, script_text(script))
    if result.status != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise CloudError(f"{script} failed on {node.instance.id} (status {result.status}):\n{tail}")
