"""EC2 API throttling as AWS documents it: token buckets, `RequestLimitExceeded`.

Source: EC2 Developer Guide, "Request throttling for the Amazon EC2 API".
Request rate limiting evaluates each API action on its own: every request takes
one token from that action's bucket, whose size and refill rate depend on the
action's category. RunInstances, StartInstances, StopInstances and
TerminateInstances also take one token per instance from a resource bucket.
A request that finds a bucket empty fails with RequestLimitExceeded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# AWS's numbers live in one module the hub reads too (it paces itself by them).
from ...ec2_limits import (
    MUTATING,
    NON_MUTATING,
    NON_MUTATING_PREFIXES,
    RESOURCE_BUCKETS,
    RESOURCE_INTENSIVE,
    RESOURCE_INTENSIVE_ACTIONS,
    UNCATEGORIZED,
    UNFILTERED_ACTIONS,
    UNFILTERED_NON_MUTATING,
)


def paginated_or_filtered(params: Mapping[str, str]) -> bool:
    return any(k.startswith("Filter.") or k in ("MaxResults", "NextToken") for k in params)


def request_bucket(action: str, params: Mapping[str, str]) -> tuple[str, tuple[float, float]]:
    """(the bucket's name, its size and refill rate) for one request."""
    if action in UNCATEGORIZED:
        return action, UNCATEGORIZED[action]
    if action in RESOURCE_INTENSIVE_ACTIONS:
        return action, RESOURCE_INTENSIVE
    if action.startswith(NON_MUTATING_PREFIXES):
        if action in UNFILTERED_ACTIONS and not paginated_or_filtered(params):
            return f"{action} (unfiltered)", UNFILTERED_NON_MUTATING
        return action, NON_MUTATING
    return action, MUTATING


def resource_count(action: str, params: Mapping[str, str]) -> int:
    """Resource tokens a request needs: instances launched, or instance ids named."""
    if action not in RESOURCE_BUCKETS:
        return 0
    if action == "RunInstances":
        try:
            return max(1, int(params.get("MaxCount", "1")))
        except ValueError:
            return 1
    return sum(1 for k in params if k.startswith("InstanceId."))


@dataclass
class TokenBucket:
    capacity: float
    refill: float  # tokens per second
    tokens: float
    updated: float

    def take(self, now: float, count: float = 1.0) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill)
        self.updated = now
        if self.tokens >= count:
            self.tokens -= count
            return True
        return False


class Throttle:
    """Every bucket of one account and region; `admit` says whether a request may pass."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self.throttled: dict[str, int] = {}

    def _bucket(self, name: str, size: tuple[float, float], now: float) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(size[0], size[1], size[0], now)
        return bucket

    def admit(self, action: str, params: Mapping[str, str]) -> bool:
        with self._lock:
            now = self.clock()
            name, size = request_bucket(action, params)
            resources = resource_count(action, params)
            request = self._bucket(name, size, now)
            resource = (
                self._bucket(f"{action} (resources)", RESOURCE_BUCKETS[action], now)
                if resources
                else None
            )
            # Check both before taking from either: a refused request costs nothing.
            request.take(now, 0)
            if resource is not None:
                resource.take(now, 0)
            ok = request.tokens >= 1 and (resource is None or resource.tokens >= resources)
            if ok:
                request.take(now)
                if resource is not None:
                    resource.take(now, resources)
            else:
                self.throttled[action] = self.throttled.get(action, 0) + 1
            return ok
