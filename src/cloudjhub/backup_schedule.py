"""A backup schedule and retention, checked and said in Data Lifecycle Manager's terms.

Admins write Unix cron (`0 3 * * *`) or DLM's own form (`cron(0 3 * * ? *)`). The
two differ (EventBridge's cron reference, which DLM uses: six fields, minutes hours
day-of-month month day-of-week year; one of the two day fields must be `?`; days
of the week are 1-7 with SUN=1), and "the schedule interval must be between 1 hour
and 1 year" (DLM API Reference, CreateRule.CronExpression). Parsing and the times a
schedule runs at are cronsim's, the cron library `pool_schedule` uses too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice, pairwise

from cronsim import CronSim, CronSimError

DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
MIN_INTERVAL_S = 3600
MAX_INTERVAL_S = 366 * 24 * 3600
_SAMPLES = 60


class BadSchedule(ValueError):
    """A schedule DLM would not take, or one we cannot say to it."""


def _unix_fields(expression: str) -> list[str]:
    """The five Unix fields of either form; an AWS form's year must be `*`."""
    text = expression.strip()
    if text.startswith("cron(") and text.endswith(")"):
        fields = text[5:-1].split()
        if len(fields) != 6:
            raise BadSchedule("cron(...) takes six fields: minute hour day month weekday year")
        if fields[5] != "*":
            raise BadSchedule("the year field must be '*'")
        minute, hour, day, month, weekday = fields[:5]
        if (day == "?") == (weekday == "?"):
            raise BadSchedule("exactly one of day-of-month and day-of-week must be '?'")
        return [minute, hour, "*" if day == "?" else day, month, _aws_weekday(weekday)]
    fields = text.split()
    if len(fields) != 5:
        raise BadSchedule("Unix cron takes five fields: minute hour day month weekday")
    if any(f == "?" for f in fields):
        raise BadSchedule("'?' belongs to the cron(...) form only")
    return fields


def _aws_weekday(field: str) -> str:
    """DLM's weekdays (1-7, SUN=1) as Unix's (0-6, SUN=0); names are the same."""
    if field in {"?", "*"}:
        return "*"
    return ",".join("-".join(map(_aws_day, part.split("-", 1))) for part in field.split(","))


def _aws_day(day: str) -> str:
    if day.isdigit() and 1 <= int(day) <= 7:
        return DAY_NAMES[int(day) - 1]
    if day.upper() in DAY_NAMES:
        return day.upper()
    raise BadSchedule(f"weekday {day!r}: use 1-7 or SUN-SAT, lists and ranges of them")


def _weekdays(sim: CronSim) -> str:
    """The weekdays cronsim expanded, by name (Unix 0 and 7 are both Sunday)."""
    plain = {d for d in sim.weekdays if isinstance(d, int)}
    if len(plain) != len(sim.weekdays):
        raise BadSchedule("weekday: 'L' and '#' have no DLM form here; use days or ranges")
    days = sorted({d % 7 for d in plain})
    if len(days) == 7:
        return "*"
    return ",".join(DAY_NAMES[d] for d in days)


def parse(expression: str) -> str:
    """Either form as the Unix expression cronsim reads, or BadSchedule naming what is wrong."""
    unix = " ".join(_unix_fields(expression))
    try:
        CronSim(unix, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise BadSchedule(str(exc) or "not a cron expression") from exc
    return unix


def times_after(expression: str, since: datetime) -> Iterator[datetime]:
    """The times (UTC) a schedule in either form runs at, strictly after `since`."""
    return iter(CronSim(parse(expression), since.astimezone(UTC)))


def to_dlm(expression: str) -> str:
    """`expression` as DLM's CronExpression, checked; BadSchedule if DLM would refuse it."""
    unix = parse(expression)
    minute, hour, day, month, weekday = _unix_fields(expression)
    if day != "*" and weekday != "*":
        # Unix runs on either day; DLM can say only one of them.
        raise BadSchedule("give a day of the month or a day of the week, not both")
    sim = CronSim(unix, datetime(2026, 1, 1, tzinfo=UTC))
    times = list(islice(sim, _SAMPLES))
    gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
    if min(gaps) < MIN_INTERVAL_S:
        raise BadSchedule("it runs more often than once an hour, which DLM refuses")
    if max(gaps) > MAX_INTERVAL_S:
        raise BadSchedule("it runs less often than once a year, which DLM refuses")
    days = _weekdays(sim)
    # DLM, like EventBridge, writes an increment from a start: 0/2, not */2.
    minute, hour = (f.replace("*/", "0/") for f in (minute, hour))
    if days == "*":
        return f"cron({minute} {hour} {day} {month} ? *)"
    return f"cron({minute} {hour} ? {month} {days} *)"


def validate_retain(count: int) -> int:
    """DLM keeps 1-1000 snapshots per volume under a count-based rule."""
    if not 1 <= count <= 1000:
        raise ValueError(f"--backup-retain {count}: keep between 1 and 1000 snapshots")
    return count
