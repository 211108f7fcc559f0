"""Warm-pool claims in batches: a class's first logins claim together, not in turn.

A spawn that wants a pool worker waits in its cluster's queue (`PoolClaims.claim`).
One claimer task in the hub takes everyone waiting, after the EC2 queue's
coalescing window (`ec2_coalesce_window`), and claims for all of them at once
(`claim_batch`): members from one listing, a distinct one per user, all re-read in
one DescribeInstances, one CreateTags each (the tags differ per user), all read
back in one DescribeInstances, and the claim marks dropped in one DeleteTags.
Claimed one at a time under a lock, each claim cost about four EC2 calls of its
own, and 300 logins against a pool of 300 took 11 minutes.

One batch at a time per cluster, so this hub never hands a member to two users;
the keeper (another process) and hand-made changes are caught by the tags, as
warm_pool.py describes. As for a single claim:
- the read after tagging (still live, still this user's, the mark ours or the
  keeper's `retiring`) leaves a member that changed meanwhile alone, and its user
  tries another;
- a member whose tagging fails is given back (`undo_claim`), and its user tries
  another, the others unaffected;
- a user's server waiting twice in one batch gets one member, not two;
- a server whose claim is in flight (its spawn cancelled and retried meanwhile)
  waits for that claim's outcome rather than claiming again, and a member that
  reaches a server the hub already knows a live worker of goes back to the pool:
  never two for one user's server.

The CreateTags of a batch (one per claim: the tags differ per user) go a few at a
time (`TAG_THREADS`), each still paced by the hub's buckets, so 300 claims cost
about 300 / (CreateTags' refill) seconds, not 300 round trips in a row.

While they wait, claimants are told their place and an estimate (`OnWait`, as in
the EC2 queue): the window left, a window per batch ahead of them, and the time
the CreateTags bucket needs to refill for the claims ahead of and including theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

from . import warm_pool
from .aws.client import CloudError, Instance
from .aws.hub import HubEc2
from .aws.pacing import Pacer
from .ec2_queue import MAX_BATCH, OnWait
from .executor import blocking
from .fleet import Fleet
from .tags import POOL_CLAIMING, POOL_RETIRING, POOL_TAG

log = logging.getLogger("cloudjhub.pool_claims")

# What a claimant gets: a member (theirs now), None (none for them: they launch), or
# the error that kept the pool from being listed.
Outcome = Instance | CloudError | None
# CreateTags of one batch at once at most: enough to keep the bucket's refill busy
# through a round trip, few enough for the hub's thread pool and EC2's connections.
TAG_THREADS = 8
# Waiting claimants are told their place and estimate this often (seconds).
TELL_EVERY = 1.0


@dataclass(frozen=True)
class Claimant:
    user: str
    user_id: str
    instance_type: str
    image_id: str | None = None
    server: str = ""
    # Their kept home volume's zone: EBS attaches only there, so only a member there.
    zone: str | None = None
    # Where the keeper records members' host keys, when hosts are pinned from the
    # console: then only a member with recorded keys is handed out (`_verifiable`).
    keys_dir: str = ""

    def wants(self, instance: Instance) -> bool:
        return warm_pool.is_member(instance, self.instance_type, self.image_id) and self.zone in (
            None,
            instance.availability_zone,
        )


def claim_batch(
    ec2: HubEc2,
    claimants: Sequence[Claimant],
    cached: Iterable[Instance] = (),
    relist: bool = True,
) -> list[Outcome]:
    """Tag a pool member to each of `claimants` (distinct users' servers), in their
    order. Blocking; one batch at a time per cluster in a hub (`PoolClaims`).

    Members are taken from `cached` (the hub's listing), each re-read before it is
    tagged; for the claimants left, from a fresh listing (unless `relist` is false:
    `cached` was just listed). Zone-bound claimants choose first, so a member in
    their zone is not taken by someone who could use any."""
    held: dict[int, Instance] = {}
    outcomes: dict[int, Outcome] = {}
    tried: set[str] = set()
    listings = [lambda: list(cached), *([ec2.describe_workers] if relist else [])]
    for listing in listings:
        waiting = [n for n in range(len(claimants)) if n not in held and n not in outcomes]
        if not waiting:
            break
        try:
            found = listing()
        except CloudError as exc:
            outcomes.update((n, exc) for n in waiting)
            break
        candidates = sorted(
            (w for w in found if warm_pool.is_unassigned(w) and w.id not in tried), key=_order
        )
        candidates = _verifiable(candidates, claimants)
        while picks := _assign(claimants, waiting, candidates, tried):
            held.update(_claim_round(ec2, claimants, picks, outcomes))
            waiting = [n for n in waiting if n not in held and n not in outcomes]
    outcomes.update(_finish(ec2, held))
    return [outcomes.get(n) for n in range(len(claimants))]


def _verifiable(candidates: list[Instance], claimants: Sequence[Claimant]) -> list[Instance]:
    """Members whose host keys the keeper recorded. cloud-init prints them on the
    first boot only, so a member without them may never be verifiable (its spawn would
    wait for a console that stays empty, then fail); the user launches instead."""
    dirs = {c.keys_dir for c in claimants if c.keys_dir}
    return [m for m in candidates if all(warm_pool.recorded_host_keys(d, m.id) for d in dirs)]


def _order(member: Instance) -> tuple[int, float, str]:
    """The member that will serve soonest first."""
    return (warm_pool.CLAIM_ORDER.get(member.state, 9), member.launched_at, member.id)


def _assign(
    claimants: Sequence[Claimant],
    waiting: list[int],
    candidates: list[Instance],
    tried: set[str],
) -> dict[int, Instance]:
    picks: dict[int, Instance] = {}
    for n in sorted(waiting, key=lambda n: claimants[n].zone is None):
        member = next((m for m in candidates if m.id not in tried and claimants[n].wants(m)), None)
        if member is not None:
            tried.add(member.id)
            picks[n] = member
    return picks


def _claim_round(
    ec2: HubEc2,
    claimants: Sequence[Claimant],
    picks: dict[int, Instance],
    outcomes: dict[int, Outcome],
) -> dict[int, Instance]:
    """Re-read, tag, read back: the claims that hold, still marked `claiming`. A
    claimant whose failed claim cannot be undone gets an error in `outcomes`, never
    a second member (the first may be theirs)."""

    def undo(n: int, member: Instance) -> None:
        who = claimants[n]
        if not warm_pool.undo_claim(ec2, member, who.user, who.user_id, who.server):
            outcomes[n] = CloudError(
                f"could not tell whether pool worker {member.id} was claimed for you "
                "(EC2 did not answer); try again in a minute",
                "ClaimUncertain",
            )

    try:
        fresh = {i.id: i for i in ec2.describe([m.id for m in picks.values()])}
    except CloudError as exc:
        log.warning("cannot read %d pool workers to claim: %s", len(picks), exc)
        return {}
    todo: dict[int, Instance] = {}
    for n, member in picks.items():
        now = fresh.get(member.id)
        if now is not None and claimants[n].wants(now):
            todo[n] = now  # else claimed, terminated or retagged since it was listed

    def tag(n: int) -> int | None:
        who, now = claimants[n], todo[n]
        try:
            ec2.tag_read_claim(now, who.user, who.user_id, who.server)
        except CloudError as exc:
            log.warning("cannot claim pool worker %s for %r: %s", now.id, who.user, exc)
            # The CreateTags may have landed all the same (a reply lost on the way).
            undo(n, now)
            return None
        return n

    # Distinct members and claimants: the calls are independent (`outcomes` is
    # written only by `undo`, each thread its own key).
    with ThreadPoolExecutor(min(TAG_THREADS, len(todo) or 1), "pool-claim") as pool:
        done = [n for n in pool.map(tag, todo) if n is not None]
    tagged = {n: todo[n] for n in done}
    if not tagged:
        return {}
    try:
        after = {i.id: i for i in ec2.describe([m.id for m in tagged.values()])}
    except CloudError as exc:
        log.warning("cannot read back %d claimed pool workers: %s", len(tagged), exc)
        for n, member in tagged.items():
            undo(n, member)
        return {}
    held: dict[int, Instance] = {}
    for n, member in tagged.items():
        who, now = claimants[n], after.get(member.id)
        if now is None or now.gone or (now.user, now.server) != (who.user, who.server):
            log.warning(
                "pool worker %s changed while %r claimed it; left alone", member.id, who.user
            )
        # `retiring` (or none): the keeper's mark landed after ours (and it dropped it
        # again on seeing our user tag), which keeps the worker ours.
        elif now.tags.get(POOL_TAG) not in (POOL_CLAIMING, POOL_RETIRING, None):
            log.warning("pool worker %s lost its claim mark; left alone", member.id)
        else:
            held[n] = now
    return held


def _finish(ec2: HubEc2, held: dict[int, Instance]) -> dict[int, Instance]:
    """Drop the claim marks of all held claims in one call."""
    if not held:
        return {}
    try:
        ec2.finish_read_claims(list(held.values()))
    except CloudError as exc:
        # Theirs now (their user tags); each user's next spawn finishes the claim.
        log.warning("claimed %d pool workers but cannot drop their marks: %s", len(held), exc)
        return held
    return {n: warm_pool.unclaimed(now) for n, now in held.items()}


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
        await blocking(ec2.release_claim, member, who.user, who.user_id, who.server)
        for now in await blocking(ec2.describe, [member.id, kept.id]):
            self.fleet.remember(now)
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
