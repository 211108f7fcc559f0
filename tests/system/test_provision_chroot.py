"""Worker provisioning for real, in a throwaway Debian root.

debootstrap makes a minimal Debian; `install-worker.sh` runs in it as on a
builder instance (packages from Debian's and PyPI's registries, this
checkout's wheel); then `cloudjhub-worker start` runs in real mode there:
it creates the user's account and runs the server as that user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cloudjhub.launch.provision import build_wheel, script_text
from cloudjhub.local.ports import free_port
from cloudjhub.worker.protocol import mapped_account

pytestmark = pytest.mark.system

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
HTTP_SERVER = ["/opt/cloudjhub/venv/bin/python", "-m", "http.server", "--bind", "127.0.0.1"]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _chroot(
    root: Path, *argv: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    variables = [f"{k}={v}" for k, v in {"PATH": PATH, **(env or {})}.items()]
    return subprocess.run(
        ["chroot", str(root), "env", "-i", *variables, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.fail("this test needs root and debootstrap (scripts/bootstrap installs it as root)")
    root = tmp_path_factory.mktemp("debian") / "root"
    made = subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    # This machine may reach PyPI through a TLS proxy whose CA only the host trusts.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "tmp" / "host-ca.crt")
    # The agent reads /proc to know its servers, as on a real instance.
    mounted = subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=False)
    assert mounted.returncode == 0, "cannot mount /proc in the Debian root"
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_install_worker_script_then_real_mode_start(debian: Path, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    shutil.copy(wheel, debian / "tmp" / wheel.name)
    # As on a cloud image: cloud-init's config directory, and the login user in lxd.
    (debian / "etc" / "cloud" / "cloud.cfg.d").mkdir(parents=True, exist_ok=True)
    for argv in (["groupadd", "lxd"], ["useradd", "-m", "-G", "lxd", "admin"]):
        made = _chroot(debian, *argv)
        assert made.returncode == 0, made.stderr
    script = script_text("install-worker.sh")
    done = _chroot(
        debian,
        "bash",
        "-s",
        stdin=script,
        env={
            "CLOUDJHUB_PACKAGE": f"/tmp/{wheel.name}",
            "CLOUDJHUB_LOGIN_USER": "admin",
            "PIP_CERT": "/tmp/host-ca.crt",
        },
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    venv = debian / "opt" / "cloudjhub" / "venv" / "bin"
    for tool in ("cloudjhub-worker", "jupyterhub-singleuser", "jupyter-lab"):
        assert (venv / tool).exists(), tool
    sudoers = debian / "etc" / "sudoers.d" / "cloudjhub"
    assert sudoers.read_text().strip() == (
        "admin ALL=(root) NOPASSWD: /opt/cloudjhub/venv/bin/cloudjhub-worker"
    )
    assert sudoers.stat().st_mode & 0o777 == 0o440
    cloud_config = debian / "etc" / "cloud" / "cloud.cfg.d" / "99-cloudjhub.cfg"
    default_user = yaml.safe_load(cloud_config.read_text())["system_info"]["default_user"]
    assert default_user == {"sudo": None, "groups": []}
    lxd = _chroot(debian, "getent", "group", "lxd")
    assert lxd.stdout.strip().endswith(":"), lxd.stdout  # nobody in it
    gitpuller = _chroot(debian, "/opt/cloudjhub/venv/bin/python", "-c", "import nbgitpuller")
    assert gitpuller.returncode == 0, gitpuller.stderr

    # A hub user never gets an account the image already has (here: a daemon's):
    # "daemon" runs as the agent's own mapped account, with no group but its own.
    daemon_port = free_port()
    daemon_request = {
        "user": "daemon",
        "ip": "127.0.0.1",
        "port": daemon_port,
        "cmd": [*HTTP_SERVER, str(daemon_port)],
        "timeout": 30,
    }
    mapped = _chroot(
        debian,
        "/opt/cloudjhub/venv/bin/cloudjhub-worker",
        "start",
        stdin=json.dumps(daemon_request),
        timeout=120,
    )
    assert mapped.returncode == 0, mapped.stderr
    daemon_pid = json.loads(mapped.stdout)["pid"]
    try:
        account = mapped_account("daemon")
        (entry,) = [
            line
            for line in (debian / "etc" / "passwd").read_text().splitlines()
            if line.startswith(account + ":")
        ]
        uid, gid = int(entry.split(":")[2]), int(entry.split(":")[3])
        assert Path(f"/proc/{daemon_pid}").stat().st_uid == uid >= 1000
        assert _chroot(debian, "id", "-G", account).stdout.split() == [str(gid)]
        stopped = _chroot(
            debian, "/opt/cloudjhub/venv/bin/cloudjhub-worker", "stop", "--user", "daemon"
        )
        assert stopped.returncode == 0 and json.loads(stopped.stdout)["stopped"] is True
        daemon_pid = None
    finally:
        if daemon_pid is not None and Path(f"/proc/{daemon_pid}").exists():
            os.killpg(daemon_pid, signal.SIGKILL)

    # Real mode: the agent creates the account and runs the server as that user.
    port = free_port()
    request = {
        "user": "alice",
        "ip": "127.0.0.1",
        "port": port,
        "env": {"JUPYTERHUB_API_TOKEN": "not-a-real-token"},
        "cmd": [*HTTP_SERVER, str(port)],
        "timeout": 30,
    }
    started = _chroot(
        debian,
        "/opt/cloudjhub/venv/bin/cloudjhub-worker",
        "start",
        stdin=json.dumps(request),
        timeout=120,
    )
    pid = None
    try:
        assert started.returncode == 0, started.stderr
        pid = json.loads(started.stdout)["pid"]
        passwd = (debian / "etc" / "passwd").read_text()
        (entry,) = [line for line in passwd.splitlines() if line.startswith("alice:")]
        uid = int(entry.split(":")[2])
        assert uid != 0
        assert Path(f"/proc/{pid}").stat().st_uid == uid
        home = debian / "home" / "alice"
        assert home.stat().st_uid == uid
        assert (
            "not-a-real-token"
            not in (debian / "var" / "log" / "cloudjhub" / "alice.log").read_text()
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        stopped = _chroot(
            debian, "/opt/cloudjhub/venv/bin/cloudjhub-worker", "stop", "--user", "alice"
        )
        assert stopped.returncode == 0 and json.loads(stopped.stdout)["stopped"] is True
        pid = None
    finally:
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
