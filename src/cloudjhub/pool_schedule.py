"""When the warm pool has which size: windows on a calendar, and a one-off window.

A window (`c.InstanceSpawner.warm_pool_schedule`, `WARM_POOL_SCHEDULE`) opens at
each time its cron expression names, read in the schedule's time zone
(`warm_pool_time_zone`, an IANA name), and stays open `duration` seconds of real
time (so a window across a DST change is still that long). While windows are open
the largest size among them wins (of equal sizes, `running`); outside every window
the pool has its base size and state. `cloudjhub prewarm` adds a one-off window,
kept in a tag (see `OneOff`), which counts like any other.

Cron expressions are parsed and evaluated by cronsim (Debian cron's rules,
including its handling of times a DST change skips or repeats).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

POOL_STATES = ("stopped", "running")
PoolState = Literal["stopped", "running"]
MAX_POOL_SIZE = 1000
# Unassigned workers kept launched (c.InstanceSpawner.warm_pool_size).
PoolSize = Annotated[int, Field(ge=0, le=MAX_POOL_SIZE)]
# A window longer than a week is a different base size, not a window.
MAX_WINDOW_SECONDS = 7 * 24 * 3600
WindowSeconds = Annotated[int, Field(ge=1, le=MAX_WINDOW_SECONDS)]


@dataclass(frozen=True)
class PoolTarget:
    """How many members the pool should have, and in which state."""

    size: int
    state: str  # "stopped" (disks only) or "running" (compute: the fastest login)


class PoolWindow(BaseModel):
    """One window of a warm-pool schedule: {"cron", "duration", "size", "state"?}."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cron: str
    duration: WindowSeconds
    size: PoolSize
    # None: the pool's own state (warm_pool_state).
    state: PoolState | None = None

    @field_validator("cron")
    @classmethod
    def _parses(cls, cron: str) -> str:
        try:
            CronSim(cron, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"{cron!r} is not a cron expression ({exc})") from exc
        return cron

    def opened(self, now: datetime) -> datetime:
        """When this window last opened at or before `now` (aware, in the zone)."""
        # cronsim steps back from its start before matching, so start a second late.
        start = now.replace(microsecond=0) + timedelta(seconds=1)
        return next(CronSim(self.cron, start, reverse=True))

    def is_open(self, now: datetime) -> bool:
        # The latest opening is the only one that can still be open: all last as long.
        began = self.opened(now).astimezone(UTC)
        return now.astimezone(UTC) < began + timedelta(seconds=self.duration)


def time_zone(name: str) -> ZoneInfo:
    """An IANA time zone, or ValueError saying which name is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)") from exc


@dataclass(frozen=True)
class OneOff:
    """A one-off window (`cloudjhub prewarm`): this size and state until `until`.

    Kept as the value of one tag, `size=N,state=S,until=<ISO 8601 UTC>`: no secret,
    and readable in the console."""

    size: int
    state: str
    until: datetime

    @property
    def until_utc(self) -> str:
        return self.until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def tag_value(self) -> str:
        return f"size={self.size},state={self.state},until={self.until_utc}"

    @classmethod
    def from_tag(cls, value: str) -> OneOff:
        """Parse a tag value; ValueError if it is not one we write."""
        fields = dict(part.partition("=")[::2] for part in value.split(","))
        if set(fields) != {"size", "state", "until"}:
            raise ValueError(f"{value!r} is not size=N,state=S,until=TIME")
        size = fields["size"]
        if not size.isdigit() or int(size) > MAX_POOL_SIZE:
            raise ValueError(f"size {size!r} is not a whole number 0-{MAX_POOL_SIZE}")
        if fields["state"] not in POOL_STATES:
            raise ValueError(f"state {fields['state']!r} is not one of {', '.join(POOL_STATES)}")
        until = datetime.fromisoformat(fields["until"])
        if until.tzinfo is None:
            raise ValueError(f"until {fields['until']!r} has no time zone")
        return cls(int(size), fields["state"], until)

    def is_open(self, now: datetime) -> bool:
        return now < self.until


@dataclass(frozen=True)
class PoolPlan:
    """The pool's target at any time: base size and state, the schedule's windows in
    its time zone, and the one-off window `one_off()` reads (each round)."""

    base: PoolTarget
    windows: Sequence[PoolWindow] = ()
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    one_off: Callable[[], OneOff | None] = lambda: None

    def __call__(self, now: float) -> PoolTarget:
        when = datetime.fromtimestamp(now, self.zone)
        open_now = [
            PoolTarget(w.size, w.state or self.base.state) for w in self.windows if w.is_open(when)
        ]
        extra = self.one_off()
        if extra is not None and extra.is_open(when):
            open_now.append(PoolTarget(extra.size, extra.state))
        if not open_now:
            return self.base
        # Largest first; of equal sizes, a running pool (the faster login).
        return max(open_now, key=lambda t: (t.size, t.state == "running"))


def parse_windows(raw: object) -> list[PoolWindow]:
    """A schedule from outside (a trait, a config file, a command line), or ValueError
    with one line naming the window, its key and the value."""
    if not isinstance(raw, list | tuple):
        raise ValueError(f"{raw!r} is not a list of windows")
    windows = []
    for number, item in enumerate(raw, 1):
        if isinstance(item, PoolWindow):
            windows.append(item)
            continue
        try:
            windows.append(PoolWindow.model_validate(item))
        except ValidationError as exc:
            raise ValueError(f"window {number}: {_why(exc, item)}") from None
    return windows


def _why(exc: ValidationError, item: object) -> str:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if not isinstance(item, dict):
        return f"{item!r} is not an object with cron, duration and size"
    if first["type"] == "extra_forbidden":
        return f"unknown key {key!r} (allowed: {', '.join(PoolWindow.model_fields)})"
    if first["type"] == "missing":
        return f"{key} is missing"
    if first["type"] == "value_error":
        return f"{key}: {first['ctx']['error']}"
    return f"{key} {first['input']!r} is not allowed: {first['msg']}"
