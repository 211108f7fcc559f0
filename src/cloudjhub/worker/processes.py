"""Processes the agent starts and ends: the server and the watchdog, found again by pid.

The agent exits long before what it starts, so it is usually not their parent: it
recognises them by pid plus start time from /proc (pids get reused), and ends them by
process group, since both lead a session of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

POLL_SECONDS = 0.1


def spawn_detached(
    argv: Sequence[str],
    *,
    cwd: str | Path,
    env: Mapping[str, str],
    log: IO[bytes],
    uid: int | None = None,
    gid: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdin closed, output to ``log``; OSError if it cannot.

    A session of its own frees it from the SSH session that ran the agent, and makes it
    the leader of a process group that can be signalled as a whole. With ``uid`` it runs
    as that user, with ``gid`` and no supplementary groups.
    """
    identity: dict[str, Any] = {}
    if uid is not None:
        identity = {"user": uid, "group": gid, "extra_groups": []}
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **identity,
    )


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None if unavailable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot), to tell it from a reused pid."""
    stat = proc_stat(pid)
    return stat[1] if stat else None


def is_alive(pid: int, proc_start: int | None = None) -> bool:
    """True if ``pid`` is a live (non-zombie) process, and the same one we started.

    Our servers are reparented to init once the agent exits; a zombie that init has not
    reaped yet, or a pid reused by an unrelated process, must count as "not running".
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = proc_stat(pid)
    if stat is None:
        return not os.path.isdir("/proc")
    state, started = stat
    if state in ("Z", "X", "x"):
        return False
    return proc_start is None or started == proc_start


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; it may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_dead(pid: int, proc_start: int | None, timeout: float) -> bool:
    """Poll until the process is gone (we are usually not its parent, so no waitpid)."""
    deadline = time.monotonic() + timeout
    while is_alive(pid, proc_start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def terminate_group(pid: int, proc_start: int | None, timeout: float) -> None:
    """SIGTERM so Jupyter can shut kernels down, SIGKILL the group if it does not exit."""
    signal_group(pid, signal.SIGTERM)
    if not wait_dead(pid, proc_start, timeout):
        signal_group(pid, signal.SIGKILL)
        wait_dead(pid, proc_start, 5.0)
    # Sweep anything left in the group (the leader, started with a new session, is pgid).
    signal_group(pid, signal.SIGKILL)


def process_env(pid: int, name: str) -> str | None:
    """A variable of a process's initial environment (readable by its owner and root)."""
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace") or None
    return None
