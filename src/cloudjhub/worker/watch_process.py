"""The self-stop watchdog's process: ``python -I -m cloudjhub.worker.watch_process --user NAME``.

``start`` runs this next to every server, so it lives as long as the server: it
imports the standard library and the agent's stdlib-only modules (``watchdog``,
``paths``, ``logs``, ``contract``), never click or pydantic, with which a watchdog
took about 3.5 times the CPU to start and 2.3 times the memory
(benchmarks/agent_start.py). So it reads the server's record (written by
``record``'s pydantic model) with a check of its own (``parse_watched``): a record
that does not check out means nothing is recorded, as ``record.read_record`` says.
``cloudjhub-worker watch`` runs the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import watchdog
from .contract import USER_RE
from .logs import utc_stamp
from .paths import SYSTEM_PATH, Layout, write_private

# How the watchdog receives the server's token: inherited, never on disk or argv.
WATCH_TOKEN_VAR = "CLOUDJHUB_WATCH_TOKEN"  # noqa: S105 - a variable name
MAX_RECORD_BYTES = 65536


@dataclass(frozen=True)
class Watched:
    """What the loop needs of a server's record."""

    watch: watchdog.Target | None
    watchdog_pid: int | None
    since: float


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_int(data: dict[str, Any], key: str) -> bool:
    return data.get(key) is None or _int(data[key])


def _target(value: object) -> watchdog.Target | None:
    if not isinstance(value, dict):
        raise ValueError("watch")
    status, hub = value.get("status_url"), value.get("hub_url")
    limit, interval = value.get("limit"), value.get("interval")
    if not isinstance(status, str) or not (hub is None or isinstance(hub, str)):
        raise ValueError("watch urls")
    if not isinstance(limit, int | float) or not isinstance(interval, int | float):
        raise ValueError("watch times")
    if isinstance(limit, bool) or isinstance(interval, bool):
        raise ValueError("watch times")
    return watchdog.Target(
        status_url=status, hub_url=hub, limit=float(limit), interval=float(interval)
    )


def parse_watched(text: bytes) -> Watched | None:
    """The record's watch, its watchdog and its start, or None if it is not a record.

    Checks every field a ``record.ServerRecord`` requires, with its type, so that this
    and ``read_record`` agree on every record the agent writes. Numbers written as
    strings, which pydantic's lax mode would take, are refused: the agent never
    writes them.
    """
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return None
        required = all(_int(data.get(key)) for key in ("pid", "port", "started"))
        texts = all(isinstance(data.get(key), str) for key in ("ip", "spec"))
        optional = all(_optional_int(data, key) for key in ("proc_start", "resumed"))
        if not (required and texts and optional):
            return None
        watch = None if data.get("watch") is None else _target(data["watch"])
        dog = data.get("watchdog")
        if dog is not None and not (
            isinstance(dog, dict) and _int(dog.get("pid")) and _optional_int(dog, "proc_start")
        ):
            return None
    except ValueError:  # json's errors included
        return None
    since = float(max(data["started"], data.get("resumed") or 0))
    return Watched(watch=watch, watchdog_pid=None if dog is None else dog["pid"], since=since)


def read_watched(path: Path) -> Watched | None:
    """The record in ``path``, or None for a missing or corrupt one."""
    try:
        with path.open("rb") as fh:
            text = fh.read(MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    # A record is well under 1 KB: a bigger file is not one the agent wrote.
    return parse_watched(text) if len(text) <= MAX_RECORD_BYTES else None


def watch_log(message: str) -> None:
    """A line of the watchdog's log (its stdout, appended to the user's watch log)."""
    print(f"{utc_stamp()} {message}", flush=True)


def request_shutdown(layout: Layout, reason: str) -> bool:
    """Shut the machine down; EC2 then stops the instance (its shutdown behaviour)."""
    if layout.emulated:
        write_private(layout.shutdown_request, reason + "\n")
        return True
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
    try:
        done = subprocess.run(
            ["shutdown", "-h", "now"], env=env, stdin=subprocess.DEVNULL, check=False
        )
    except OSError as exc:
        watch_log(f"cannot run shutdown: {exc}")
        return False
    return done.returncode == 0


def run_watchdog(layout: Layout, user: str) -> str:
    """Watch the user's recorded server until the machine stops; return why it ended."""
    path = layout.record_file(user)
    record = read_watched(path)
    if record is None or record.watch is None:
        return "nothing to watch"
    me = os.getpid()
    # Out of os.environ, so that nothing this process runs (shutdown) inherits it.
    token = os.environ.pop(WATCH_TOKEN_VAR, None)

    def read_since() -> float | None:
        current = read_watched(path)
        if current is None or (current.watchdog_pid is not None and current.watchdog_pid != me):
            return None
        return current.since

    probe = watchdog.Probe(
        read_token=lambda: token,
        read_since=read_since,
        shutdown=lambda reason: request_shutdown(layout, f"cloudjhub-worker: {reason}"),
        log=watch_log,
    )
    return watchdog.watch(record.watch, probe)


def watch_user(user: str) -> None:
    """What the process does: watch, then log why the watch ended."""
    watch_log(f"watch ended: {run_watchdog(Layout.from_env(), user)}")


def _user(value: str) -> str:
    """Reject bad names before they reach a file path."""
    if not USER_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} must match {USER_RE.pattern}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="cloudjhub-worker watch", description="The self-stop watchdog of a user's server."
    )
    parser.add_argument("--user", required=True, type=_user, help="JupyterHub user name.")
    watch_user(parser.parse_args(argv).user)


if __name__ == "__main__":
    main()
