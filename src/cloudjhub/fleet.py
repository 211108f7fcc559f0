"""One cached, batched view of all workers of a cluster.

Every spawner of a hub shares it: `poll()` for 500 users costs one filtered,
paginated DescribeInstances per interval, not 500 calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import ClassVar

from .aws.client import ALL_STATES, Instance
from .aws.hub import HubEc2
from .executor import blocking
from .metrics import set_instance_counts
from .tags import POOL_CLAIMING, POOL_TAG

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
        self._by_id = fresh
        self._fetched_at = started
        set_instance_counts((i.state for i in fresh.values()), ALL_STATES)

    def remember(self, instance: Instance) -> None:
        """Record what a launch or describe just told us, ahead of the next refresh."""
        self._by_id[instance.id] = instance
        self._remembered[instance.id] = time.monotonic()
        set_instance_counts((i.state for i in self._by_id.values()), ALL_STATES)

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
