"""One cached, batched view of all workers of a cluster.

Every spawner of a hub shares it: `poll()` for 500 users costs one filtered,
paginated DescribeInstances per interval, not 500 calls. Spawns waiting for a
state share another, faster one that names only the instances they wait for (the
watch set), so a storm of 300 logins does not list the whole cluster every 2 s.
And a spawn's first question, "which workers are this user's?", asked by 300 spawns
at once, is one DescribeInstances for all the names asked meanwhile (`user_workers`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

from .aws.client import ALL_STATES, Instance
from .aws.hub import HubEc2
from .executor import blocking
from .metrics import set_instance_counts
from .tags import POOL_CLAIMING, POOL_TAG, is_server

LAUNCH_LAG_GRACE = 120.0


class Fleet:
    _shared: ClassVar[dict[tuple[str, str, str], Fleet]] = {}

    def __init__(self, ec2: HubEc2, max_age: float = 15.0) -> None:
        self.ec2 = ec2
        self.max_age = max_age
        self._by_id: dict[str, Instance] = {}
        self._remembered: dict[str, float] = {}
        self._fetched_at = float("-inf")
        self._inflight: asyncio.Future[None] | None = None
        # Instances spawns wait on (an id per waiter), read together by `refresh_watched`.
        self._watched: Counter[str] = Counter()
        self._watch_fetched_at = float("-inf")
        self._watch_inflight: asyncio.Future[None] | None = None
        # When a watched read or a launch last told us of an id: a whole-cluster
        # listing that started before must not overwrite it.
        self._read_at: dict[str, float] = {}
        # Users whose workers the next lookup reads, and the answer they wait for.
        self._asked: set[str] = set()
        self._answer: asyncio.Future[dict[str, list[Instance] | Exception]] | None = None
        self._lookups: asyncio.Task[None] | None = None

    @classmethod
    def shared(
        cls, key: tuple[str, str, str], connect: Callable[[], HubEc2], max_age: float
    ) -> Fleet:
        """The one Fleet for (cluster, region, endpoint) in this process."""
        fleet = cls._shared.get(key)
        if fleet is None:
            fleet = cls._shared[key] = cls(connect(), max_age)
        return fleet

    @property
    def age(self) -> float:
        return time.monotonic() - self._fetched_at

    async def refresh(self, max_age: float | None = None) -> None:
        """Refresh if older than max_age; concurrent callers share one request."""
        limit = self.max_age if max_age is None else max_age
        if self.age < limit:
            return
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch())
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        started = time.monotonic()
        instances = await blocking(self.ec2.describe_workers)
        fresh = {i.id: i for i in instances}
        # DescribeInstances can lag a launch by seconds: keep what a launch
        # told us until a refresh lists it (or the lag grace runs out).
        for instance_id, when in list(self._remembered.items()):
            if instance_id in fresh or when < started - LAUNCH_LAG_GRACE:
                del self._remembered[instance_id]
            elif instance_id in self._by_id:
                fresh[instance_id] = self._by_id[instance_id]
        for instance_id, when in list(self._read_at.items()):
            if when <= started:
                del self._read_at[instance_id]
            elif instance_id in self._by_id:  # read after this listing began: fresher
                fresh[instance_id] = self._by_id[instance_id]
        self._by_id = fresh
        self._fetched_at = started
        set_instance_counts((i.state for i in fresh.values()), ALL_STATES)

    @contextmanager
    def watching(self, instance_id: str) -> Iterator[None]:
        """While a spawn waits on `instance_id`: it is in the watch set."""
        self._watched[instance_id] += 1
        try:
            yield
        finally:
            self._watched[instance_id] -= 1
            if self._watched[instance_id] <= 0:
                del self._watched[instance_id]

    async def refresh_watched(self, max_age: float) -> None:
        """Read every watched instance again if the last read is older than max_age:
        one DescribeInstances for all waiters (one per 200 ids: `describe` chunks them,
        EC2's most filter values in one call, `ec2_limits.MAX_FILTER_VALUES`), never
        the whole cluster.

        By an `instance-id` filter, not InstanceIds: with InstanceIds one id EC2 does
        not know yet (a launch it has not caught up with: "Eventual consistency in the
        Amazon EC2 API") fails the whole call with InvalidInstanceID.NotFound, while a
        filter just leaves it out, and only a filtered call may page (MaxResults
        "cannot be specified with InstanceIds": DescribeInstances, EC2 API Reference).
        An id not listed keeps what a launch or an earlier read told us."""
        if time.monotonic() - self._watch_fetched_at < max_age or not self._watched:
            return
        if self._watch_inflight is None or self._watch_inflight.done():
            self._watch_inflight = asyncio.ensure_future(self._fetch_watched())
        await asyncio.shield(self._watch_inflight)

    async def _fetch_watched(self) -> None:
        started = time.monotonic()
        for instance in await blocking(self.ec2.describe, sorted(self._watched)):
            newer = max(self._fetched_at, self._read_at.get(instance.id, float("-inf")))
            if newer > started and instance.id in self._by_id:
                continue  # a listing or a launch told us after this read began: fresher
            self._by_id[instance.id] = instance
            self._read_at[instance.id] = started
        self._watch_fetched_at = started
        set_instance_counts((i.state for i in self._by_id.values()), ALL_STATES)

    def remember(self, instance: Instance) -> None:
        """Record what a launch or describe just told us, ahead of the next refresh."""
        self._by_id[instance.id] = instance
        self._remembered[instance.id] = self._read_at[instance.id] = time.monotonic()
        set_instance_counts((i.state for i in self._by_id.values()), ALL_STATES)

    async def user_workers(self, user: str, server: str | None) -> list[Instance]:
        """`HubEc2.user_workers(user, server)`, read after this call began: names asked
        while a lookup is in flight go together in the next one, so a lone login is
        answered at once and a storm of them costs a few calls, not one each. A call
        EC2 refuses fails only the names it asked for."""
        self._asked.add(user)
        if self._answer is None:
            self._answer = asyncio.get_running_loop().create_future()
        answer = self._answer
        if self._lookups is None or self._lookups.done():
            self._lookups = asyncio.ensure_future(self._look_up())
        found = (await asyncio.shield(answer))[user]
        if isinstance(found, Exception):
            raise found
        return [i for i in found if is_server(i.tags, server)]

    async def _look_up(self) -> None:
        while self._answer is not None:
            users, answer = sorted(self._asked), self._answer
            self._asked, self._answer = set(), None
            got: dict[str, list[Instance] | Exception] = {}
            try:
                try:
                    groups = self.ec2.user_lookups(users)
                except Exception as exc:  # a bug: every waiter raises it, none hangs
                    groups, got = [], dict.fromkeys(users, exc)
                for group in groups:
                    try:
                        got.update(await blocking(self.ec2.users_workers, group))
                    except Exception as exc:  # each of these waiters raises it
                        got.update(dict.fromkeys(group, exc))
            except asyncio.CancelledError:
                answer.cancel()
                if self._answer is not None:
                    self._answer.cancel()
                    self._asked, self._answer = set(), None
                raise
            answer.set_result(got)

    def get(self, instance_id: str) -> Instance | None:
        return self._by_id.get(instance_id)

    def for_user(self, user: str, server: str = "") -> Instance | None:
        """The live instance of the user's `server` ("" the default); the newest if
        (wrongly) there are several.

        A pool worker someone tagged with the user by hand is not theirs (warm_pool.py)."""
        mine = [
            i
            for i in self._by_id.values()
            if i.user == user
            and i.server == server
            and i.live
            and i.tags.get(POOL_TAG, POOL_CLAIMING) == POOL_CLAIMING
        ]
        if not mine:
            return None
        return max(
            mine,
            key=lambda i: (
                i.state == "running",
                i.launched_at,
                i.id,
            ),
        )

    def instances(self) -> list[Instance]:
        return list(self._by_id.values())
