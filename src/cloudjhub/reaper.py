"""The orphan reaper: stop workers that no hub server wants.

A worker can outlive the hub's interest in it: the hub crashed mid-spawn, a
stop failed, a pending instance could not be stopped yet, or someone launched
one by hand. The idle culler never sees those (it only knows hub servers), so
they would run, and bill, forever. The reaper runs as a hub-managed service
with read-only hub scopes: each round it lists the cluster's workers (one
DescribeInstances) and the hub's active or pending servers, and stops, through
the guarded `HubEc2.stop`, every running worker whose (user, server) has had no
such server for longer than the grace period: a worker tagged
`cloudjhub:server=NAME` belongs to the user's named server NAME, one without
that tag to their default server. Warm-pool workers (any `cloudjhub:pool`
tag but a claim's `claiming`, which makes it its user's) are not orphans: the pool
keeps them, running or stopped, on purpose.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from .aws.client import CloudError, Instance
from .aws.hub import HubEc2
from .tags import POOL_CLAIMING, POOL_TAG
from .usage import UsageEvent, append_event

log = logging.getLogger("cloudjhub.reaper")

PAGE_SIZE = 200
# Stopped workers cost only storage, which the reaper does not manage.

REAPER_STOPS = Counter(
    "cloudjhub_reaper_stops", "Orphaned workers the reaper stopped (no hub server wanted them)."
)
REAPER_ORPHANS = Gauge(
    "cloudjhub_reaper_orphans",
    "Workers of users with no active hub server, by EC2 state, at the last round.",
    ["state"],
)
REAPER_ROUNDS = Counter(
    "cloudjhub_reaper_rounds", "Reaper rounds by outcome: ok, hub-error, ec2-error.", ["outcome"]
)


class HubUnavailable(Exception):
    """The hub API did not answer; a round without it must not stop anything."""


def default_timing(idle_timeout: int) -> tuple[float, float]:
    """(interval, grace) from the idle timeout: a quarter and a half of it, clamped,
    so a demo with a 30 s timeout stops an orphan well within two minutes and a
    class with a one-hour timeout checks every five minutes."""
    interval = min(300.0, max(5.0, idle_timeout / 4))
    grace = min(600.0, max(10.0, idle_timeout / 2))
    return interval, grace


class HubApi:
    """The few read-only hub REST calls the reaper makes.

    Their scopes, and nothing more, are REAPER_SCOPES in hub/services.py, which
    grants them."""

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the hub's own API URL
            self.api_url + path,
            headers={
                "Authorization": f"token {self._token}",
                "Accept": "application/jupyterhub-pagination+json",
            },
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310
            return json.loads(reply.read())

    def servers_in_use(self) -> set[tuple[str, str]]:
        """(user, server name) of every active server (ready, or pending start or
        stop; "" is the default server), all pages."""
        names: set[tuple[str, str]] = set()
        offset = 0
        try:
            while True:
                page = self._get(f"/users?state=active&offset={offset}&limit={PAGE_SIZE}")
                if isinstance(page, list):  # a hub too old to paginate
                    page = {"items": page}
                names.update((u["name"], s) for u in page["items"] for s in u.get("servers") or {})
                following = (page.get("_pagination") or {}).get("next")
                if not following:
                    return names
                offset = int(following["offset"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HubUnavailable(f"cannot list the hub's users: {exc}") from exc

    def has_server(self, user: str, server: str = "") -> bool:
        """A last look at one user's server, right before stopping its worker."""
        try:
            model = self._get(f"/users/{urllib.parse.quote(user, safe='')}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise HubUnavailable(f"cannot read hub user {user!r}: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise HubUnavailable(f"cannot read hub user {user!r}: {exc}") from exc
        return server in (model.get("servers") or {})


@dataclass
class Reaper:
    """One reaper's memory: when each worker was first seen with no server wanting it."""

    ec2: HubEc2
    hub: HubApi
    grace: float
    usage_log: str = ""
    clock: Callable[[], float] = time.time
    orphan_since: dict[str, float] = field(default_factory=dict)
    _reported: set[tuple[str, str]] = field(default_factory=set)

    def round(self) -> list[str]:
        """One pass; returns the ids it stopped. Hub or EC2 trouble stops nothing."""
        try:
            # EC2 first, then the hub: a server that appears in between is seen.
            workers = self.ec2.describe_workers()
        except CloudError as exc:
            REAPER_ROUNDS.labels("ec2-error").inc()
            log.warning("cannot list workers: %s", exc)
            return []
        try:
            wanted = self.hub.servers_in_use()
        except HubUnavailable as exc:
            REAPER_ROUNDS.labels("hub-error").inc()
            log.warning("%s; stopping nothing this round", exc)
            return []
        stopped = self._judge(workers, wanted)
        REAPER_ROUNDS.labels("ok").inc()
        return stopped

    def _judge(self, workers: list[Instance], wanted: set[tuple[str, str]]) -> list[str]:
        now = self.clock()
        orphans = [
            w
            for w in workers
            if (w.user, w.server) not in wanted
            and w.live
            and w.state != "stopped"
            and w.tags.get(POOL_TAG, POOL_CLAIMING) == POOL_CLAIMING
        ]
        ids = {w.id for w in orphans}
        for forgotten in set(self.orphan_since) - ids:
            del self.orphan_since[forgotten]
        self._reported = {r for r in self._reported if r[0] in ids}
        counts: dict[str, int] = {}
        stopped: list[str] = []
        for worker in orphans:
            counts[worker.state] = counts.get(worker.state, 0) + 1
            since = self.orphan_since.setdefault(worker.id, now)
            age = now - since
            if age < self.grace:
                continue
            if worker.state == "running":
                if self._stop(worker, age):
                    stopped.append(worker.id)
            elif (worker.id, worker.state) not in self._reported:
                self._reported.add((worker.id, worker.state))
                if worker.state == "pending":
                    log.warning(
                        "worker %s of %r has been pending for %.0fs with no hub server; "
                        "it will be stopped once it runs",
                        worker.id,
                        worker.user,
                        age,
                    )
                else:
                    log.warning(
                        "worker %s of %r has been %s for %.0fs with no hub server",
                        worker.id,
                        worker.user,
                        worker.state,
                        age,
                    )
        for state in {"pending", "running", "stopping", *counts}:
            REAPER_ORPHANS.labels(state).set(counts.get(state, 0))
        return stopped

    def _stop(self, worker: Instance, age: float) -> bool:
        if worker.user is None:
            log.warning("worker %s has no user tag; leaving it alone", worker.id)
            return False
        try:
            if self.hub.has_server(worker.user, worker.server):
                self.orphan_since.pop(worker.id, None)
                return False
        except HubUnavailable as exc:
            log.warning("%s; not stopping %s", exc, worker.id)
            return False
        try:
            self.ec2.stop(worker.id)
        except CloudError as exc:
            log.warning("cannot stop orphaned worker %s: %s", worker.id, exc)
            return False
        REAPER_STOPS.inc()
        self.orphan_since.pop(worker.id, None)
        log.warning(
            "stopped worker %s of %r: no hub server has wanted it for %.0fs",
            worker.id,
            worker.user,
            age,
        )
        self._record(worker)
        return True

    def _record(self, worker: Instance) -> None:
        if not self.usage_log:
            return
        event = UsageEvent(
            t=self.clock(),
            event="stop",
            user=worker.user or "",
            server=worker.server,
            instance_id=worker.id,
            instance_type=worker.instance_type,
            reason="reaper",
            cluster=self.ec2.cluster,
        )
        try:
            append_event(Path(self.usage_log), event)
        except OSError as exc:
            log.warning("cannot append to the usage log %s: %s", self.usage_log, exc)


def run(reaper: Reaper, interval: float, stopping: threading.Event) -> None:
    """A round every `interval` seconds until `stopping` is set (SIGTERM from the hub)."""
    log.info("reaper: a round every %.0fs, grace %.0fs", interval, reaper.grace)
    while not stopping.is_set():
        began = time.monotonic()
        try:
            reaper.round()
        except Exception:  # one bad round must not end the service
            log.exception("reaper round failed")
        stopping.wait(max(0.0, interval - (time.monotonic() - began)))
