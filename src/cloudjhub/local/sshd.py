"""A real OpenSSH sshd for one emulated instance, bound to its private IP.

Every process started through it carries CLOUDJHUB_INSTANCE_ID in its
environment, so the emulator can find and end all of an instance's
processes by pid when EC2 stops it, as a real shutdown would.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..keys import ensure_ed25519
from ..waiting import TimedOut, poll_until

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def sshd_binary() -> str:
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd")
    if not found:
        raise RuntimeError(
            "OpenSSH sshd is not installed; the local cloud needs it "
            "(Debian/Ubuntu: apt-get install openssh-server)"
        )
    return found


def ensure_host_key(etc: Path) -> str:
    """Generate the instance's host key once (it survives stop/start, like a disk)."""
    return ensure_ed25519(etc / "ssh_host_ed25519_key", "")


def _config(root: Path, ip: str, port: int, env: dict[str, str]) -> str:
    etc = root / "etc" / "ssh"
    for value in env.values():
        if '"' in value or "\n" in value:
            raise ValueError(f"cannot pass {value!r} through sshd's SetEnv")
    setenv = " ".join(f'"{k}={v}"' for k, v in env.items())
    return "\n".join(
        [
            f"ListenAddress {ip}:{port}",
            f"HostKey {etc / 'ssh_host_ed25519_key'}",
            f"PidFile {root / 'run' / 'sshd.pid'}",
            f"AuthorizedKeysFile {etc / 'authorized_keys'}",
            f"AllowUsers {getpass.getuser()}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "PermitTunnel no",
            f"SetEnv {setenv}",
            "",
        ]
    )


def start_sshd(
    root: Path,
    ip: str,
    port: int,
    authorized_key: str,
    env: dict[str, str],
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """The machine's sshd; `prefix` goes before its command (machine_share)."""
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    etc = root / "etc" / "ssh"
    (root / "run").mkdir(parents=True, exist_ok=True)
    (etc / "authorized_keys").write_text(authorized_key.strip() + "\n")
    (etc / "authorized_keys").chmod(0o600)
    cfg = etc / "sshd_config"
    cfg.touch(mode=0o600)
    cfg.chmod(0o600)  # it carries the instance role's (placeholder) credentials
    cfg.write_text(_config(root, ip, port, env))
    log = root / "var" / "log"
    log.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [*prefix, sshd_binary(), "-D", "-f", str(cfg), "-E", str(log / "sshd.log")],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def instance_pids(marker: str) -> list[int]:
    """Pids whose environment carries `marker` (e.g. CLOUDJHUB_INSTANCE_ID=i-123)."""
    needle = marker.encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if environ.startswith(needle) or b"\0" + needle in environ:
            found.append(int(entry.name))
    return found


def with_descendants(pids: list[int]) -> list[int]:
    """pids and every process below them (kernels start their own sessions,
    so process groups miss them; parentage does not)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def end_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is left after the grace period."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        poll_until(
            lambda: [p for p in pids if _alive(p)],
            timeout=grace,
            interval=0.05,
            done=lambda alive: not alive,
        )
    except TimedOut as late:
        for pid in late.value:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
