"""What a cluster costs: a monthly estimate, and actual use from the usage log.

Pure functions over a price table and usage events; no AWS call. The shipped
table (`prices.json`) is a dated copy of AWS list prices, overridable per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import ConfigError, error_line, parse_json, read_json
from .usage import UsageEvent

SHIPPED_PRICES = "prices.json"
Money = Annotated[float, Field(ge=0)]


class CostError(ValueError):
    """Bad input to a cost report; the message names the input."""


class Prices(BaseModel):
    """A price table (`prices.json` or a --prices file)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    comment: str = Field("", alias="_comment")
    region: str
    currency: str = "USD"
    hours_per_month: float = Field(730.0, gt=0)
    instance_hourly: dict[str, Money]
    gp3_gb_month: Money
    snapshot_gb_month: Money
    source: str = Field("", exclude=True)

    def hourly(self, instance_type: str) -> float:
        try:
            return self.instance_hourly[instance_type]
        except KeyError:
            raise CostError(
                f"{self.source}: no price for instance type {instance_type!r}; "
                "add it to a price table and pass it with --prices FILE"
            ) from None


def load_prices(path: Path | None = None) -> Prices:
    """The price table at `path`, or the shipped one."""
    try:
        if path is None:
            source = f"shipped {SHIPPED_PRICES}"
            data = parse_json(
                resources.files(__package__).joinpath(SHIPPED_PRICES).read_bytes(), source
            )
        else:
            source = str(path)
            data = read_json(path)
        if not isinstance(data, dict):
            raise CostError(f"{source}: expected a JSON object at the top level")
        return Prices.model_validate({**data, "source": source})
    except ConfigError as exc:
        raise CostError(str(exc)) from exc
    except ValidationError as exc:
        raise CostError(error_line(exc, source)) from exc


# --------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class Estimate:
    """manager + users x (instance price x hours + storage x (storage + snapshot price))."""

    users: int
    hours_per_user: float
    instance_type: str
    manager_type: str
    storage_gb: float
    manager: float
    per_user_compute: float
    per_user_storage: float
    total: float
    always_on_total: float
    # The warm pool (in total): stopped members cost their root disks, running ones
    # compute too.
    pool_size: int = 0
    pool_state: str = "stopped"
    pool: float = 0.0

    @property
    def per_user(self) -> float:
        return self.per_user_compute + self.per_user_storage


def monthly_estimate(
    prices: Prices,
    users: int,
    hours_per_user: float,
    instance_type: str,
    manager_type: str,
    storage_gb: float,
    pool_size: int = 0,
    pool_state: str = "stopped",
    pool_disk_gb: float = 0.0,
) -> Estimate:
    """A month of the cluster (and its warm pool); beside it, the same users with
    always-on workers (which need no pool)."""
    month = prices.hours_per_month
    manager = prices.hourly(manager_type) * month
    compute = prices.hourly(instance_type) * hours_per_user
    storage = storage_gb * (prices.gp3_gb_month + prices.snapshot_gb_month)
    always_on = manager + users * (prices.hourly(instance_type) * month + storage)
    pool_compute = prices.hourly(instance_type) * month if pool_state == "running" else 0.0
    pool = pool_size * (pool_compute + pool_disk_gb * prices.gp3_gb_month)
    return Estimate(
        users=users,
        hours_per_user=hours_per_user,
        instance_type=instance_type,
        manager_type=manager_type,
        storage_gb=storage_gb,
        manager=manager,
        per_user_compute=compute,
        per_user_storage=storage,
        total=manager + users * (compute + storage) + pool,
        always_on_total=always_on,
        pool_size=pool_size,
        pool_state=pool_state,
        pool=pool,
    )


# --------------------------------------------------------------------------- actual use


@dataclass(frozen=True)
class Interval:
    """One instance running, from a start event to its stop (or to report time)."""

    user: str
    instance_id: str
    instance_type: str
    start: float
    end: float
    still_running: bool = False
    tags: tuple[tuple[str, str], ...] = ()
    server: str = ""

    def group(self, tag: str | None) -> tuple[str, str]:
        """What the report adds this interval to: its user and server, or its value of
        `tag` (and no server)."""
        if tag is None:
            return (self.user, self.server)
        return (dict(self.tags).get(tag, "(untagged)"), "")


def intervals(events: Iterable[UsageEvent], until: float) -> tuple[list[Interval], list[str]]:
    """Pair each instance's starts and stops, oldest first.

    A start while the instance is already counted is a repeat (the spawner logs one
    each time it finds its instance running) and changes nothing. A stop without a
    start is ignored with a warning: nothing says how long the instance ran.
    """
    opened: dict[str, UsageEvent] = {}
    out: list[Interval] = []
    warnings: list[str] = []
    for ev in sorted(events, key=lambda e: e.t):
        if ev.t > until:
            break
        if ev.event == "start":
            opened.setdefault(ev.instance_id, ev)
            continue
        begun = opened.pop(ev.instance_id, None)
        if begun is None:
            warnings.append(
                f"stop of {ev.instance_id} ({ev.user}, {ev.reason or 'no reason'}) at "
                f"t={ev.t:.0f} has no start before it; ignored"
            )
            continue
        tags = tuple(sorted(begun.tags.items()))
        out.append(
            Interval(
                begun.user,
                ev.instance_id,
                begun.instance_type,
                begun.t,
                ev.t,
                tags=tags,
                server=begun.server,
            )
        )
    for instance_id, begun in opened.items():
        tags = tuple(sorted(begun.tags.items()))
        out.append(
            Interval(
                begun.user,
                instance_id,
                begun.instance_type,
                begun.t,
                until,
                True,
                tags,
                server=begun.server,
            )
        )
    out.sort(key=lambda i: (i.start, i.instance_id))
    return out, warnings


@dataclass(frozen=True)
class UserUsage:
    """One user's server (`server` "" for the default; each named server is a row)."""

    user: str
    instance_type: str
    instance_hours: float
    cost: float
    always_on_cost: float
    still_running: bool
    server: str = ""

    @property
    def who(self) -> str:
        return f"{self.user}/{self.server}" if self.server else self.user


@dataclass(frozen=True)
class UsageReport:
    since: float
    until: float
    period_hours: float
    users: list[UserUsage]
    warnings: list[str] = field(default_factory=list)

    @property
    def instance_hours(self) -> float:
        return sum(u.instance_hours for u in self.users)

    @property
    def cost(self) -> float:
        return sum(u.cost for u in self.users)

    @property
    def always_on_cost(self) -> float:
        return sum(u.always_on_cost for u in self.users)


def usage_report(
    events: Iterable[UsageEvent],
    prices: Prices,
    until: float,
    since: float | None = None,
    default_type: str = "",
    group_by: str | None = None,
) -> UsageReport:
    """Instance-hours and cost per user and server (or per value of the tag
    `group_by`) in [since, until], beside always-on.

    `since` defaults to the first event. Always-on is each server's (latest) instance
    type running for the whole period. An event without a type counts as `default_type`.
    """
    events = list(events)
    pairs, warnings = intervals(events, until)
    start = since if since is not None else min((e.t for e in events), default=until)
    period = max(0.0, until - start) / 3600
    hours: dict[tuple[str, str], float] = {}
    cost: dict[tuple[str, str], float] = {}
    latest: dict[tuple[str, str], Interval] = {}
    running: set[tuple[str, str]] = set()
    for span in pairs:
        overlap = max(0.0, min(span.end, until) - max(span.start, start)) / 3600
        if overlap <= 0 and not (span.still_running and span.start <= until):
            continue
        kind = span.instance_type or default_type
        key = span.group(group_by)
        hours[key] = hours.get(key, 0.0) + overlap
        cost[key] = cost.get(key, 0.0) + overlap * prices.hourly(kind)
        if key not in latest or span.start >= latest[key].start:
            latest[key] = span
        if span.still_running:
            running.add(key)
    users = [
        UserUsage(
            user=key[0],
            server=key[1],
            instance_type=latest[key].instance_type or default_type,
            instance_hours=hours[key],
            cost=cost[key],
            always_on_cost=period * prices.hourly(latest[key].instance_type or default_type),
            still_running=key in running,
        )
        for key in sorted(hours)
    ]
    return UsageReport(start, until, period, users, warnings)
