"""The server's and the watchdog's logs: private, append-only, rotated at start, read
from the end (or followed, for `cloudjhub logs --follow`)."""

from __future__ import annotations

import os
import select
import sys
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # a type only: what imports logs need not import pydantic
    from .protocol import StartRequest

TAIL_BLOCK = 8192
# What a failed start sends back was written by the user's own server: keep it small
# (at most ~MAX_LINE_CHARS per line) and cheap (at most MAX_SCAN_BYTES read).
MAX_LINE_CHARS = 500
MAX_SCAN_BYTES = 8 * 1024 * 1024
# A log bigger than this when a server (or watchdog) starts is moved to NAME.1, replacing
# the one before: a user's chatty server fills at most about twice this, plus one run.
ROTATE_BYTES = 10 * 1024 * 1024
FOLLOW_POLL = 0.5


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_log(path: Path) -> IO[bytes]:
    """Open a log for appending; only root (or the emulator user) can read it."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    rotate(path)
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


def tail_lines(path: Path, count: int, start: int = 0, end: int | None = None) -> list[str]:
    """Last ``count`` lines after byte offset ``start`` (and before ``end``), reading
    backwards (logs grow large)."""
    if count <= 0:
        return []
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return []
    with fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size if end is None else min(end, size)
        data = b""
        while pos > start and data.count(b"\n") <= count:
            step = min(TAIL_BLOCK, pos - start)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-count:]


def short_tail(path: Path, count: int, start: int = 0) -> list[str]:
    """Last ``count`` lines after ``start``, each cut to MAX_LINE_CHARS, for a message.

    Read forwards so that a line keeps its beginning, holding only one short line at a
    time; a huge run is read from its last MAX_SCAN_BYTES only.
    """
    if count <= 0:
        return []
    lines: deque[str] = deque(maxlen=count)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return []
    with fh:
        begin = max(start, fh.seek(0, os.SEEK_END) - MAX_SCAN_BYTES)
        fh.seek(begin)
        if begin > start:
            _skip_line(fh)  # it began before what we read
        while head := fh.readline(MAX_LINE_CHARS + 1):
            cut = len(head) > MAX_LINE_CHARS and not head.endswith(b"\n")
            if cut:
                _skip_line(fh)
            text = head[:MAX_LINE_CHARS].rstrip(b"\r\n").decode("utf-8", "replace")
            lines.append(text + " [cut]" if cut else text)
    return list(lines)


def _skip_line(fh: BinaryIO) -> None:
    while (chunk := fh.readline(TAIL_BLOCK)) and not chunk.endswith(b"\n"):
        pass


def rotate(path: Path, limit: int = ROTATE_BYTES) -> None:
    """Move a log over `limit` bytes to NAME.1 (replacing it), so a new run starts afresh."""
    try:
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def stdin_closed(timeout: float) -> bool:
    """Wait up to `timeout` for stdin; True once it ends (the SSH client went away)."""
    try:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], timeout)
    except (OSError, ValueError):  # no usable stdin: nothing can tell us to stop
        return False
    return bool(ready) and not os.read(sys.stdin.fileno(), 4096)


def follow(
    path: Path,
    write: Callable[[bytes], None],
    start: int,
    should_stop: Callable[[float], bool] = stdin_closed,
) -> None:
    """Write what is appended to `path` after byte `start` until `should_stop` (which
    also paces the polling) says so; a log rotated, truncated or made since is read afresh."""
    fh = None
    pos = start
    try:
        while True:
            try:
                inode: int | None = path.stat().st_ino
            except FileNotFoundError:
                inode = None
            if inode is not None and (fh is None or os.fstat(fh.fileno()).st_ino != inode):
                if fh is not None:
                    fh.close()
                    pos = 0  # rotated: the new file is all new
                fh = path.open("rb")
            if fh is not None:
                if os.fstat(fh.fileno()).st_size < pos:
                    pos = 0  # truncated
                fh.seek(pos)
                while chunk := fh.read(TAIL_BLOCK):
                    write(chunk)
                pos = fh.tell()
            if should_stop(FOLLOW_POLL):
                return
    finally:
        if fh is not None:
            fh.close()
