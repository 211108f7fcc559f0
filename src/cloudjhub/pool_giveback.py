"""Giving back, in the background, a pool member that could not go back at once.

A claimed member that reaches a server the hub already knows a live worker of goes
back to the pool (pool_claims `_one_each`). When EC2 refuses that give-back (its
CreateTags or DeleteTags throttled or failing), the user keeps the worker they have
and the member stays tagged to them: one user, two instances, one idle and
costing, the pool one short. Nothing else would ever clean it up: to the keeper
(no hub database) and to the reaper (the user has a server) it is the user's
worker, or, half given back (`ready` and a user), one "tagged by hand" and left alone.

So the hub that met it retries the give-back (`GiveBacks.later`), with backoff,
until it lands or no longer applies. Smallest safe design: the hub is the only one
who knows which worker the server kept (it handed it to the spawn, which keeps its
id in the spawner's state), so the hub retries, not the keeper. Each try reads
both instances again and gives the member back (`release_claim`: each tag goes
only where it still has the value the claim wrote) only while
- the member is still this user's server's, live; and
- it is half given back already (`ready` and a user: no spawn takes it), or the
  kept worker is still theirs and live, so their spawner adopts it again (its id is
  in the spawner's state, which outlives a stop; for as long as this hub runs, so
  do these retries), unless a pool mark on it sends the spawn to the tags, where
  the one adopted is the spawner's rule's (running first, then the newest).
Otherwise the member is left alone: it may be the server's only worker now.

A spawn of the same hub could adopt the member between a try's read and its
release; so adoption and give-back exclude each other (`GiveBacks.taken`,
`GiveBacks.adopting`): a spawn that adopts a member first calls its give-back off,
and one whose read may predate a release skips the member.

Only transient refusals (throttling, EC2 unavailable) are retried, at most
MAX_TRIES times; any other error is said once and the member left as it is.

Limit: the retries live in the hub process; a hub restarted before EC2 recovers
forgets them (the stray then stays the user's, as before this module).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import ClassVar

from .aws.client import CloudError, Instance
from .aws.hub import HubEc2
from .executor import blocking
from .tags import POOL_READY, POOL_TAG

log = logging.getLogger("cloudjhub.pool_claims")

# The first retry after this long, each next one twice as late, at most MAX_DELAY.
FIRST_DELAY = 5.0
MAX_DELAY = 300.0
# After this many tries (about an hour and a quarter) the member is left as it is.
MAX_TRIES = 20
# Refusals that pass (botocore's retries gave up on them): worth another try later.
# The empty code is a failure without an AWS answer (the connection).
TRANSIENT = frozenset(
    {
        "",
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)


def adopted_first(instance: Instance) -> tuple[bool, float, str]:
    """Which of a server's live workers a spawn without state adopts: the greatest
    (spawner `_find_instance`, and `_one_each` when a member meets a worker)."""
    return (instance.state == "running", instance.launched_at, instance.id)


def may_give_back(member: Instance, kept: Instance | None, user: str, server: str) -> bool:
    """Whether `member` is still a stray of (user, server) that no spawn takes."""
    if not member.live or (member.user, member.server) != (user, server):
        return False
    if member.tags.get(POOL_TAG) == POOL_READY:
        return True  # half given back: no spawn takes it any more
    if kept is None or not kept.live or (kept.user, kept.server) != (user, server):
        return False  # the member may be their only worker now
    # The spawner holds kept's id and adopts it again while it is live and unmarked;
    # a pool mark on it sends the spawn to the tags, where the rule decides.
    return POOL_TAG not in kept.tags or adopted_first(kept) > adopted_first(member)


class GiveBacks:
    """The give-backs a hub's claims retry (one per member), as background tasks.

    The class keeps what this hub's spawners consult, in the event loop's thread:
    which members have a give-back (`_state`: waiting, releasing or adopted), and a
    counter bumped as each release starts and ends (`_touched`), so a spawn whose
    read began before a release ended knows its read of that member is stale."""

    _state: ClassVar[dict[str, str]] = {}
    _touched: ClassVar[dict[str, int]] = {}
    _clock: ClassVar[int] = 0

    def __init__(self, ec2: HubEc2, remember: Callable[[Instance], None]) -> None:
        self.ec2 = ec2
        self.remember = remember
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def now(cls) -> int:
        """A mark a spawn takes before it reads the user's instances."""
        return cls._clock

    @classmethod
    def taken(cls, instance_id: str, since: int) -> bool:
        """Whether a spawn that read `instance_id` after mark `since` must not adopt it:
        it is being given back, or a release of it ended after the read began."""
        releasing = cls._state.get(instance_id) == "releasing"
        return releasing or cls._touched.get(instance_id, -1) > since

    @classmethod
    def adopting(cls, instance_id: str) -> None:
        """A spawn adopts `instance_id` (not `taken`): a give-back of it is called off."""
        if instance_id in cls._state:
            cls._state[instance_id] = "adopted"
            log.info("pool worker %s adopted by a spawn; no longer given back", instance_id)

    @classmethod
    def _touch(cls, member: str) -> None:
        cls._clock += 1
        cls._touched[member] = cls._clock

    def later(self, member: str, kept: str, user: str, user_id: str, server: str) -> None:
        """Retry giving `member` back from (user, server), who keeps `kept`."""
        if member in self._tasks and not self._tasks[member].done():
            return
        task = asyncio.ensure_future(self._retry(member, kept, user, user_id, server))
        self._tasks[member] = task
        GiveBacks._state[member] = "waiting"

        def done(ended: asyncio.Task[None]) -> None:
            if self._tasks.get(member) is ended:  # not a later give-back's
                del self._tasks[member]
                GiveBacks._state.pop(member, None)

        task.add_done_callback(done)

    async def _retry(self, member: str, kept: str, user: str, user_id: str, server: str) -> None:
        delay = FIRST_DELAY
        for _ in range(MAX_TRIES):
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            try:
                now = await blocking(self._try, member, kept, user, user_id, server)
                if now is None:
                    return
                # In the loop's thread, as the spawners' adoption: no await in between.
                if GiveBacks._state.get(member) == "adopted":
                    log.info("pool worker %s adopted by a spawn; left alone", member)
                    return
                GiveBacks._state[member] = "releasing"
                self._touch(member)
                try:
                    done = await blocking(self._release, now, user, user_id, server)
                finally:
                    GiveBacks._state[member] = "waiting"
                    self._touch(member)
            except CloudError as exc:
                if exc.code not in TRANSIENT:
                    log.warning("cannot give pool worker %s back; giving up: %s", member, exc)
                    return
                log.warning("still cannot give pool worker %s back: %s", member, exc)
                continue
            except Exception:  # a bug: say so, and stop retrying
                log.exception("giving pool worker %s back failed", member)
                return
            for read in done:  # in the loop's thread, as every other update of the fleet
                self.remember(read)
            return
        log.warning("gave up giving pool worker %s back after %d tries", member, MAX_TRIES)

    def _try(
        self, member_id: str, kept_id: str, user: str, user_id: str, server: str
    ) -> Instance | None:
        """One try's read (blocking): the member if it is still to go back, else None."""
        now = {i.id: i for i in self.ec2.describe([member_id, kept_id])}
        member, kept = now.get(member_id), now.get(kept_id)
        if member is None or not may_give_back(member, kept, user, server):
            log.info("pool worker %s no longer a stray of %r; left alone", member_id, user)
            return None
        return member

    def _release(self, member: Instance, user: str, user_id: str, server: str) -> list[Instance]:
        """Give `member` back (blocking): it read again after it went back."""
        self.ec2.release_claim(member, user, user_id, server)
        log.info("gave pool worker %s back from %r at last", member.id, user)
        try:
            return self.ec2.describe([member.id])
        except CloudError:
            return []  # back all the same; the hub's next listing shows it
