"""The record of a user's server: which process it is, and what watches it.

``start`` writes it to ``run/cloudjhub/<user>.json``; ``stop``, ``status``, ``pids``,
a later ``start`` (to resume or replace the server) and the watchdog read it. The file
is only ever replaced whole, so a reader never sees half of one; a missing or corrupt
file both mean that nothing is recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from .paths import Layout, write_private
from .protocol import USER_RE
from .watchdog import Target as WatchTarget


class WatchdogProcess(BaseModel):
    """The self-stop watchdog's process."""

    model_config = ConfigDict(frozen=True)

    pid: int
    proc_start: int | None = None


class ServerRecord(BaseModel):
    """A started server; ``proc_start`` tells it from a process that reused its pid."""

    model_config = ConfigDict(frozen=True)

    pid: int
    ip: str
    port: int
    started: int  # Unix seconds
    proc_start: int | None = None
    # Digest of what makes the server what it is; resume keeps only the same server.
    spec: str
    # None: self-stop is off (or not set up yet, while the server starts).
    watch: WatchTarget | None = None
    # None until the watchdog's pid is known: a watchdog finding another pid here was replaced.
    watchdog: WatchdogProcess | None = None
    resumed: int | None = None  # Unix seconds of the last resume after a hibernation

    @property
    def since(self) -> float:
        """When the server last (re)started: no idleness before it counts."""
        return float(max(self.started, self.resumed or 0))


def read_record(path: Path) -> ServerRecord | None:
    """The record in ``path``, or None for a missing or corrupt one."""
    try:
        return ServerRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def write_record(path: Path, record: ServerRecord) -> None:
    """Write atomically so a concurrent ``status`` never sees a half-written file."""
    write_private(path, record.model_dump_json())


def remove_record(path: Path, pid: int | None = None) -> None:
    """Remove the record, but only if it still describes ``pid`` when one is given."""
    if pid is not None:
        current = read_record(path)
        if current is not None and current.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def all_records(layout: Layout) -> Iterator[ServerRecord]:
    """Every readable record under the root."""
    if not layout.run_dir.is_dir():
        return
    for path in sorted(layout.run_dir.glob("*.json")):
        record = read_record(path)
        if record is not None and USER_RE.fullmatch(path.stem):
            yield record
