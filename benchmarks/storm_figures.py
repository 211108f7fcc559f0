"""The pure parts of `storm.py`: the bucket bound, percentiles, the side-by-side table,
and when servers became ready, read from the hub's log.

The bound AWS's buckets impose on N instances that must all change state (N launches
for first logins without a pool, N starts for restarts): each instance takes one
token from the action's resource bucket (capacity C, refilling at r per second), so
the last token is available after max(0, (N - C) / r) seconds, and that instance is
then `pending` for the state-transition time T:

    bound = max(0, (N - C) / r) + T

That is the best any client can do, whatever it coalesces: it assumes every call is
admitted by the action's request bucket, which holds when calls name many instances.
A client that makes one call per instance also waits for the request bucket
(capacity c, refill q): `per_call_bound` = max(0, (N - c) / q) + T. A warm pool moves
the launches before the storm, so its first logins can beat `bound`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any


def bucket_bound(n: int, capacity: float, refill: float, transition: float) -> float:
    """Seconds until the n-th instance can have left its transition (see the docstring)."""
    return max(0.0, (n - capacity) / refill) + transition


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def histogram_quantile(buckets: Mapping[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile q (0-1) of a Prometheus histogram
    given as cumulative counts by `le`; NaN if it counted nothing."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    wanted = q * buckets[bounds[-1]]
    for le in bounds:
        if buckets[le] >= wanted:
            return le
    return bounds[-1]


def summary(
    ready: Mapping[str, float], failed: Iterable[str], makespan: float, bound: float
) -> dict[str, Any]:
    """One phase's figures: seconds to ready per user, who failed, the makespan."""
    times = list(ready.values())
    return {
        "ready": len(times),
        "failures": len(list(failed)),
        "makespan_s": round(makespan, 1),
        "p50_s": round(percentile(times, 50), 1),
        "p95_s": round(percentile(times, 95), 1),
        "bound_s": round(bound, 1),
        "makespan_over_bound": round(makespan / bound, 2) if bound > 0 else math.inf,
    }


def by_caller(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Each caller's count by action between two reads of the like-AWS layer's
    per-caller counters (`calls_by_caller`, `throttled_by_caller`); none: left out."""
    out: dict[str, dict[str, int]] = {}
    for caller, row in after.items():
        was = before.get(caller, {})
        moved = {action: n - was.get(action, 0) for action, n in row.items()}
        if any(moved.values()):
            out[caller] = {action: n for action, n in moved.items() if n}
    return out


def callers_line(table: Mapping[str, Mapping[str, int]]) -> str:
    """`hub: DescribeInstances=3 RunInstances=1; reaper: ...`, callers by name."""
    return (
        "; ".join(
            f"{caller}: " + " ".join(f"{a}={n}" for a, n in sorted(row.items()))
            for caller, row in sorted(table.items())
        )
        or "-"
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    return str(value)


def side_by_side(columns: Mapping[str, Mapping[str, Any]], rows: Sequence[str]) -> str:
    """A table: one row per figure, one column per strategy."""
    names = list(columns)
    cells = [[row, *(_cell(columns[n].get(row, "")) for n in names)] for row in rows]
    widths = [max(len(r[i]) for r in [["", *names], *cells]) for i in range(len(names) + 1)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(["", *names], widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


class ReadyLog:
    """When each server became ready, from the hub's own log: JupyterHub's "User X took
    T seconds to start" line, stamped with the hub's clock (this machine's).

    Read instead of listing every user through the REST API each second: at N=300 that
    listing held the hub's event loop 0.1-2.5 s per call (JupyterHub builds each user's
    model synchronously), so the benchmark's own polling was most of the loop lag it
    reported."""

    LINE = re.compile(
        r"^\[I (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) JupyterHub base:\d+\] "
        r"User (\S+) took [\d.]+ seconds to start$"
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0
        self._rest = b""

    def new(self) -> dict[str, float]:
        """Users whose servers became ready since the last call, and when (epoch seconds)."""
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        ready: dict[str, float] = {}
        for raw in lines:
            if m := self.LINE.match(raw.decode(errors="replace")):
                when = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()
                ready[m[2]] = when
        return ready
