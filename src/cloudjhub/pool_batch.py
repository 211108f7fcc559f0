"""Claiming pool members for a batch of first logins at once (`claim_batch`).

Members come from one listing, a distinct one per user, all re-read in one
DescribeInstances, one CreateTags each (the tags differ per user), all read back
in one DescribeInstances, and the claim marks dropped in one DeleteTags. Claimed
one at a time under a lock, each claim cost about four EC2 calls of its own, and
300 logins against a pool of 300 took 11 minutes. The queue that gathers a batch
and hands out its outcomes is pool_claims.py.

One batch at a time per cluster, so this hub never hands a member to two users;
the keeper (another process) and hand-made changes are caught by the tags, as
warm_pool.py describes. As for a single claim:
- the read after tagging (still live, still this user's, the mark ours or the
  keeper's `retiring`) leaves a member that changed meanwhile alone, and its user
  tries another;
- a member whose tagging fails is given back (`undo_claim`), and its user tries
  another, the others unaffected;
- a user's server waiting twice in one batch gets one member, not two.

The CreateTags of a batch (one per claim: the tags differ per user) go a few at a
time (`TAG_THREADS`), each still paced by the hub's buckets, so 300 claims cost
about 300 / (CreateTags' refill) seconds, not 300 round trips in a row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import warm_pool
from .aws.client import CloudError, Instance
from .aws.hub import HubEc2
from .tags import POOL_CLAIMING, POOL_READY, POOL_RETIRING, POOL_TAG

log = logging.getLogger("cloudjhub.pool_claims")

# What a claimant gets: a member (theirs now), None (none for them: they launch), or
# the error that kept the pool from being listed.
Outcome = Instance | CloudError | None
# CreateTags of one batch at once at most: enough to keep the bucket's refill busy
# through a round trip, few enough for the hub's thread pool and EC2's connections.
TAG_THREADS = 8


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
    # console: then only a member with recorded keys is handed out (warm_pool.claimable).
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
    # The fresh listing: only the pool's ready members, the only candidates below.
    relisting = [lambda: ec2.pool_workers(POOL_READY)] if relist else []
    listings = [lambda: list(cached), *relisting]
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
        candidates = warm_pool.claimable(candidates, (c.keys_dir for c in claimants))
        while picks := _assign(claimants, waiting, candidates, tried):
            held.update(_claim_round(ec2, claimants, picks, outcomes))
            waiting = [n for n in waiting if n not in held and n not in outcomes]
    outcomes.update(_finish(ec2, held))
    return [outcomes.get(n) for n in range(len(claimants))]


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
