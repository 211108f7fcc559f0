"""The server's and the watchdog's logs: private, append-only, read from the end."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from .protocol import StartRequest

TAIL_BLOCK = 8192


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_log(path: Path) -> IO[bytes]:
    """Open a log for appending; only root (or the emulator user) can read it."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")


def log_header(request: StartRequest, argv: Sequence[str]) -> bytes:
    """One line marking each start, so a log shared by many runs can be read."""
    # argv only: secrets travel in the environment, which is never written anywhere.
    line = (
        f"=== {utc_stamp()} cloudjhub-worker: starting server for {request.user} "
        f"on {request.ip}:{request.port}: {' '.join(argv)} ==="
    )
    return line.encode("utf-8", "replace") + b"\n"


def tail_lines(path: Path, count: int, start: int = 0) -> list[str]:
    """Last ``count`` lines after byte offset ``start``, reading backwards (logs grow large)."""
    if count <= 0:
        return []
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return []
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        data = b""
        while pos > start and data.count(b"\n") <= count:
            step = min(TAIL_BLOCK, pos - start)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-count:]
