"""The usage log: one JSON line per instance start or stop, for `cloudjhub cost`.

The spawner and the reaper append to the same file; a single `write` of one
short line to a file opened with O_APPEND lands whole, so they never interleave.
The log records what the hub asked for and saw, not AWS's bill.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import error_line

USAGE_LOG = "/var/lib/cloudjhub/usage.jsonl"


class UsageEvent(BaseModel):
    """One line of the log. `reason` says why: launch/resume/running for a start;
    idle/request/self/terminated/reaper for a stop."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    t: float = Field(description="Seconds since the epoch.")
    event: Literal["start", "stop"]
    user: str
    server: str = Field(default="", description="The named server; empty for the default.")
    instance_id: str = Field(min_length=1)
    instance_type: str = ""
    reason: str = ""
    cluster: str = ""
    # The worker's extra tags (EXTRA_TAGS, its profile's), for `cost --group-by TAG`.
    tags: dict[str, str] = Field(default_factory=dict)


def append_event(path: str | os.PathLike[str], event: UsageEvent) -> None:
    """Append one line; blocking, so the hub calls it through the executor."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(event.model_dump(), separators=(",", ":")) + "\n").encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(path: str | os.PathLike[str]) -> tuple[list[UsageEvent], list[str]]:
    """Every valid event, oldest first, and a warning naming each line that is not one."""
    events: list[UsageEvent] = []
    warnings: list[str] = []
    # A line that is not UTF-8 (a torn write, a stray edit) is one more bad line.
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                events.append(UsageEvent.model_validate_json(raw))
            except ValidationError as exc:
                warnings.append(f"{path}: line {number}: {error_line(exc)}; skipped")
    events.sort(key=lambda e: e.t)
    return events, warnings
