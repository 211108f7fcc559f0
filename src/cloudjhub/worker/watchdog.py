"""The self-stop watchdog: an instance nobody uses, or whose hub is gone, stops itself.

The hub's idle culler stops idle servers, but only while the hub runs: a hub that
crashed, was torn down or lost its database leaves instances running (and billing)
forever. So every instance also watches itself. Next to the user's Jupyter server runs
this loop; it reads the server's own ``/api/status`` (whose ``last_activity`` includes
busy kernels) and asks the hub's API root whether the hub is there. After ``limit``
seconds (the hub's idle timeout plus a grace period, so the culler normally acts
first) without activity, or without a hub, it shuts the machine down; workers are
launched with InstanceInitiatedShutdownBehavior=stop, so EC2 stops the instance.

Stdlib only: this runs on instances. The decision is the pure function `stop_reason`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import urllib.request

HTTP_TIMEOUT = 5.0
MAX_BODY = 65536
MIN_INTERVAL = 1.0
MAX_INTERVAL = 60.0


def check_interval(limit: float) -> float:
    """Check about 20 times per limit, between every second and every minute."""
    return max(MIN_INTERVAL, min(MAX_INTERVAL, limit / 20))


def stop_reason(
    now: float,
    last_activity: float | None,
    hub_ok_since: float | None,
    since: float,
    limit: float,
) -> str | None:
    """Why the instance should stop now, or None to keep it running.

    Times are Unix seconds. ``since`` is when watching (re)started: the server's start,
    its resume after hibernation, or the watchdog's own wake-up after a suspension.
    Nothing older than it counts against the instance, so a freshly resumed machine
    is never stopped for idleness it slept through. A limit of 0 disables stopping.
    """
    if limit <= 0:
        return None
    active = max(since, last_activity or since)
    if now - active >= limit:
        return f"no activity for {now - active:.0f}s (limit {limit:g}s)"
    hub = max(since, hub_ok_since or since)
    if now - hub >= limit:
        return f"the hub has not answered for {now - hub:.0f}s (limit {limit:g}s)"
    return None


def parse_timestamp(value: object) -> float | None:
    """An ISO 8601 time as Jupyter writes it ("...Z"), as Unix seconds; naive means UTC."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """No proxies from the environment (they would see the token), no redirects.

    Built (and urllib imported: a third of the watchdog's imports) on the first check,
    so that what imports this module for Target, the agent's `start`, does not pay.
    """
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        """Never follow a redirect: it would carry the Authorization header elsewhere."""

        def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) checked by the agent
    try:
        with _opener().open(request, timeout=HTTP_TIMEOUT) as reply:
            return reply.status, reply.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def server_last_activity(status_url: str, token: str) -> float | None:
    """The server's own idea of its last activity, or None if it cannot be read."""
    try:
        status, body = _get(status_url, {"Authorization": f"token {token}"})
        if status != 200:
            return None
        data = json.loads(body)
    except (OSError, ValueError):
        return None
    return parse_timestamp(data.get("last_activity")) if isinstance(data, dict) else None


def hub_answers(api_url: str) -> bool:
    """The hub's API root answers 200 without credentials: no token needed to ask."""
    try:
        status, _ = _get(api_url.rstrip("/") + "/", {})
    except OSError:
        return False
    return status == 200


@dataclass(frozen=True)
class Target:
    """What one watchdog watches, as the agent recorded it."""

    status_url: str
    hub_url: str | None
    limit: float
    interval: float


@dataclass
class Probe:
    """The outside world of the loop, replaceable in tests."""

    read_token: Callable[[], str | None]
    # The latest start/resume time recorded for the server; None ends the watch.
    read_since: Callable[[], float | None]
    shutdown: Callable[[str], bool]
    log: Callable[[str], None]
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    last_activity: Callable[[str, str], float | None] = server_last_activity
    hub_ok: Callable[[str], bool] = hub_answers


def watch(target: Target, probe: Probe) -> str:
    """Watch until the instance is shut down or the watch is over; return why it ended."""
    started = probe.clock()
    woke = started
    last_activity: float | None = None
    hub_ok_since: float | None = None
    hub_was_ok = True
    previous = started
    # A gap much longer than one round means the machine was suspended (hibernated):
    # what happened while it slept is not idleness.
    gap = 2 * target.interval + 2 * HTTP_TIMEOUT + 10
    probe.log(f"watching {target.status_url}: stop after {target.limit:g}s idle or without hub")
    while True:
        now = probe.clock()
        if now - previous > gap:
            probe.log(f"woke up after {now - previous:.0f}s asleep; idle clock restarts")
            woke = now
        recorded = probe.read_since()
        if recorded is None:
            return "the server is no longer recorded"
        token = probe.read_token()
        seen = probe.last_activity(target.status_url, token) if token else None
        if seen is not None:
            last_activity = max(last_activity or seen, seen)
        ok = target.hub_url is None or probe.hub_ok(target.hub_url)
        if ok != hub_was_ok:
            probe.log("the hub answers again" if ok else "the hub does not answer")
            hub_was_ok = ok
        now = probe.clock()
        if ok:
            hub_ok_since = now
        reason = stop_reason(now, last_activity, hub_ok_since, max(woke, recorded), target.limit)
        if reason:
            probe.log(f"shutting the instance down: {reason}; last activity {_iso(last_activity)}")
            if probe.shutdown(reason):
                return reason
        previous = probe.clock()
        probe.sleep(target.interval)


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return "never seen"
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
