"""Prometheus metrics of the hub side, in the default registry.

JupyterHub serves the default registry at `/hub/metrics`, so everything
declared here appears there with no extra endpoint. This module imports nothing
of ours, so the lowest floors (`aws`, `fleet`) may count into it.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

# A spawn phase lasts from under a second (resume, connect) to minutes (boot).
PHASE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))

SPAWN_PHASE_SECONDS = Histogram(
    "cloudjhub_spawn_phase_seconds",
    "Seconds each phase of a successful spawn took: launch (RunInstances), start "
    "(StartInstances of a stopped instance), boot (until running), connect (host keys "
    "and SSH), jupyter (cloudjhub-worker start until Jupyter listens).",
    ["phase"],
    buckets=PHASE_BUCKETS,
)
INSTANCES = Gauge(
    "cloudjhub_instances",
    "Worker instances of the cluster by EC2 state, as of the hub's last fleet refresh.",
    ["state"],
)
EC2_API_CALLS = Counter(
    "cloudjhub_ec2_api_calls",
    "EC2 API calls by action and outcome ('ok' or the EC2 error code), after botocore's retries.",
    ["action", "outcome"],
)
SERVER_STOPS = Counter(
    "cloudjhub_server_stops",
    "Instances the hub stopped because a server was stopped. reason='idle': the server "
    "had been idle for at least the idle timeout (the culler's criterion); "
    "reason='request': any other stop (the user or an admin).",
    ["reason"],
)
SELF_STOPS = Counter(
    "cloudjhub_self_stops",
    "Instances of running servers that stopped (or vanished) without the hub asking.",
)


@contextmanager
def spawn_phase(phase: str) -> Iterator[None]:
    """Observe how long a spawn phase took, if it succeeded (a failure is not a duration)."""
    started = time.monotonic()
    yield
    observe_phase(phase, time.monotonic() - started)


def observe_phase(phase: str, seconds: float) -> None:
    SPAWN_PHASE_SECONDS.labels(phase).observe(max(0.0, seconds))


_states_shown: set[str] = set()


def set_instance_counts(states: Iterable[str], known: Iterable[str] = ()) -> None:
    """Count instances by state. A state nobody is in (one of `known`, or one shown
    before) is set to 0, not left stale."""
    counts = Tally(states)
    _states_shown.update(known, counts)
    for state in _states_shown:
        INSTANCES.labels(state).set(counts.get(state, 0))


def count_ec2_call(action: str, outcome: str) -> None:
    EC2_API_CALLS.labels(action, outcome).inc()


def stop_reason(last_activity: datetime | None, idle_timeout: int, now: datetime) -> str:
    """Why the hub stops a server: JupyterHub's stop() carries no reason, so infer it.

    The idle culler only deletes servers idle for at least the idle timeout, so such
    a stop is 'idle'; anything else (the user, an admin) is 'request'. An admin who
    stops a server that idle is counted as idle, which is what it was.
    """
    if last_activity is None or idle_timeout <= 0:
        return "request"
    if last_activity.tzinfo is None:  # JupyterHub stores naive UTC
        last_activity = last_activity.replace(tzinfo=UTC)
    idle = (now - last_activity).total_seconds()
    return "idle" if idle >= idle_timeout else "request"
