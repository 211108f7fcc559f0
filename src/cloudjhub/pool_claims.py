"""Warm-pool claims in batches: a class's first logins claim together, not in turn.

A spawn that wants a pool worker waits in its cluster's queue (`PoolClaims.claim`).
One claimer task in the hub takes everyone waiting, after the EC2 queue's
coalescing window (`ec2_coalesce_window`), and claims for all of them at once
(`claim_batch`, pool_batch.py, which says how a batch is claimed safely). Here:
- a server whose claim is in flight (its spawn cancelled and retried meanwhile)
  waits for that claim's outcome rather than claiming again, and a member that
  reaches a server the hub already knows a live worker of goes back to the pool:
  never two for one user's server. When EC2 refuses that, the hub retries it in the
  background (pool_giveback.py says when it is safe).

While they wait, claimants are told their place and an estimate (`OnWait`, as in
the EC2 queue): the window left, a window per batch ahead of them, and the time
the CreateTags bucket needs to refill for the claims ahead of and including theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar

from . import warm_pool
from .aws.client import CloudError, Instance
from .aws.pacing import Pacer
from .ec2_queue import MAX_BATCH, OnWait
from .executor import blocking
from .fleet import Fleet
from .pool_batch import Claimant, Outcome, claim_batch
from .pool_giveback import GiveBacks

__all__ = ["Claimant", "Outcome", "PoolClaims", "claim_batch"]

log = logging.getLogger("cloudjhub.pool_claims")

# Waiting claimants are told their place and estimate this often (seconds).
TELL_EVERY = 1.0


@dataclass
class _Waiter:
    claimant: Claimant
    on_wait: OnWait | None = None
    told: tuple[int, int] = (0, 0)  # the last (place, seconds) said: each said once
    done: asyncio.Future[Instance | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.claimant.user, self.claimant.server)


class PoolClaims:
    """The queue of a cluster's claims in a hub process (one per cluster, region
    and endpoint, like `Fleet` and `Ec2Queue`), served by one claimer task."""

    _shared: ClassVar[dict[tuple[str, str, str], PoolClaims]] = {}

    def __init__(self, fleet: Fleet, window: float, pacer: Pacer | None = None) -> None:
        self.fleet = fleet
        self.window = window
        self.pacer = pacer
        self._waiting: list[_Waiter] = []
        self._claimer: asyncio.Task[None] | None = None
        # The batch being claimed, and each of its servers' outcome to come: a retried
        # spawn of one of them waits for it instead of claiming a second member.
        self._batch: list[_Waiter] = []
        self._in_flight: dict[tuple[str, str], asyncio.Future[Outcome | BaseException]] = {}
        self._window_ends = 0.0
        self.give_backs = GiveBacks(fleet.ec2, fleet.remember)

    @classmethod
    def shared(
        cls, key: tuple[str, str, str], fleet: Fleet, window: float, pacer: Pacer | None = None
    ) -> PoolClaims:
        claims = cls._shared.get(key)
        if claims is None or claims.fleet is not fleet:  # one per connection (Fleet's)
            claims = cls._shared[key] = cls(fleet, window, pacer)
        return claims

    async def claim(self, claimant: Claimant, on_wait: OnWait | None = None) -> Instance | None:
        """A pool member now `claimant`'s, or None (then they launch)."""
        waiter = _Waiter(claimant, on_wait)
        flight = self._in_flight.get(waiter.key)
        if flight is not None:
            # Their earlier spawn's claim, cancelled but still landing: its outcome is theirs.
            got = await asyncio.shield(flight)
            if isinstance(got, BaseException):
                raise got
        else:
            self._waiting.append(waiter)
            if self._claimer is None or self._claimer.done():
                self._window_ends = time.monotonic() + self.window
                self._claimer = asyncio.ensure_future(self._serve())
            self._tell([waiter])
            got = await waiter.done
        if isinstance(got, Instance):
            return await self._one_each(claimant, got)
        return got

    async def _one_each(self, who: Claimant, member: Instance) -> Instance:
        """`member`, unless the hub knows another live worker of this server (a launch
        or claim that landed after their spawn looked): then that one (read again to be
        sure), and the member goes back to the pool. Never two for one user's server."""
        others = [
            i.id
            for i in self.fleet.instances()
            if (i.user, i.server) == (who.user, who.server) and i.id != member.id and i.live
        ]
        ec2 = self.fleet.ec2
        fresh = await blocking(ec2.describe, others) if others else []
        live = [i for i in fresh if i.live and not warm_pool.handed_out_by_hand(i)]
        if not live:
            return member
        kept = max(live, key=lambda i: (i.state == "running", i.launched_at, i.id))
        log.warning("%r has worker %s; pool worker %s goes back", who.user, kept.id, member.id)
        try:
            await blocking(ec2.release_claim, member, who.user, who.user_id, who.server)
            for now in await blocking(ec2.describe, [member.id, kept.id]):
                self.fleet.remember(now)
        except CloudError as exc:
            # Failing the spawn would not untag the member either: the user keeps the
            # worker they have, and the member goes back later.
            log.warning("cannot give pool worker %s back from %r yet: %s", member.id, who.user, exc)
            self.give_backs.later(member.id, kept.id, who.user, who.user_id, who.server)
        return kept

    async def _serve(self) -> None:
        ticker = asyncio.ensure_future(self._tick())
        try:
            while self._waiting:
                if self.window > 0:
                    self._window_ends = time.monotonic() + self.window
                    await asyncio.sleep(self.window)  # a storm's claims gather meanwhile
                batch = [w for w in self._waiting[:MAX_BATCH] if not w.done.done()]
                del self._waiting[:MAX_BATCH]
                if batch:
                    await self._serve_batch(batch)
        finally:
            ticker.cancel()

    async def _serve_batch(self, batch: list[_Waiter]) -> None:
        loop = asyncio.get_running_loop()
        flights = {w.key: self._in_flight.setdefault(w.key, loop.create_future()) for w in batch}
        self._batch = batch
        try:
            await self._claim(batch, flights)
        finally:
            self._batch = []
            stopped = RuntimeError("the pool's claimer stopped before this claim")
            # Cancelled or broken mid-batch: no spawn may wait on it for ever.
            for waiter in batch:
                if not waiter.done.done():
                    waiter.done.set_exception(stopped)
            for key, flight in flights.items():
                if not flight.done():
                    flight.set_result(stopped)
                if self._in_flight.get(key) is flight:
                    del self._in_flight[key]

    async def _tick(self) -> None:
        """Tell the waiting their place and estimate until the queue is empty."""
        while True:
            await asyncio.sleep(TELL_EVERY)
            self._tell()

    def _tell(self, only: list[_Waiter] | None = None) -> None:
        """Tell the waiting (or `only` these) their place and estimate, if changed."""
        waiting = [w for w in (*self._batch, *self._waiting) if not w.done.done()]
        places = [n for n, w in enumerate(waiting, 1) if w.on_wait and (not only or w in only)]
        if not places:
            return
        tags = self.pacer.wait_for("CreateTags", places) if self.pacer else [0.0] * len(places)
        # In the batch being claimed: its CreateTags. Queued: the window (left, or
        # after the batch in flight) and one more per full batch ahead, then theirs.
        in_flight = len(self._batch)
        window_left = max(0.0, self._window_ends - time.monotonic())
        for place, tagged in zip(places, tags, strict=True):
            waiter, wait = waiting[place - 1], tagged
            if place > in_flight:
                ahead = (place - in_flight - 1) // MAX_BATCH
                first = self.window if in_flight else window_left
                wait += first + ahead * self.window
            if waiter.on_wait is not None and waiter.told != (place, round(wait)):
                waiter.told = (place, round(wait))
                waiter.on_wait(place, wait)

    async def _claim(
        self,
        batch: list[_Waiter],
        flights: dict[tuple[str, str], asyncio.Future[Outcome | BaseException]],
    ) -> None:
        index: dict[tuple[str, str], int] = {}
        claimants: list[Claimant] = []
        for waiter in batch:
            if waiter.key not in index:
                index[waiter.key] = len(claimants)
                claimants.append(waiter.claimant)
        outcomes: list[Outcome | Exception]
        try:
            started = time.monotonic()
            await self.fleet.refresh()  # one listing for a batch, when the hub's is old
            listed = time.monotonic() - self.fleet.age >= started
            instances = self.fleet.instances()
            ec2 = self.fleet.ec2
            outcomes = [*await blocking(claim_batch, ec2, claimants, instances, not listed)]
        except Exception as exc:  # a bug or a failed refresh: every waiter hears of it
            outcomes = [exc] * len(claimants)
        for got in outcomes:
            if isinstance(got, Instance):  # before the next batch reads the listing
                self.fleet.remember(got)
        for key, n in index.items():
            flights[key].set_result(outcomes[n])
        for waiter in batch:
            got = outcomes[index[waiter.key]]
            if waiter.done.done():
                continue  # its spawn was cancelled; a retry waits on its flight
            if isinstance(got, BaseException):
                waiter.done.set_exception(got)
            else:
                waiter.done.set_result(got)
