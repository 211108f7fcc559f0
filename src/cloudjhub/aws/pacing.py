"""The hub's side of AWS's request buckets: spend tokens no faster than AWS refills them.

A storm of logins that calls EC2 as fast as it can drains AWS's buckets, and every
call after that is a RequestLimitExceeded that botocore retries, draining them
again. `Pacer` keeps a copy of each bucket (`ec2_limits`) and hands out the time
at which a request may go: a reservation, so waiters are served first come, first
served and each knows how long it waits. Tokens may go below zero (a debt the
refill pays off) so a reservation never has to be revisited.

Two ways in: `attach(client)` paces every call a boto3 client makes, sleeping in
the calling thread (short waits: describes, tags, volumes); `reserve` with
`prepaid()` lets an async caller (the EC2 queue, `ec2_queue.py`) wait on the event
loop instead, showing users their place, and then make the call without paying
twice.

AWS keeps one set of buckets per account and region, and the pool's keeper
(`cloudjhub warm-pool`) is another process on the manager spending them: with a copy
each, the two could together spend twice the refill. Given the same `BucketFile`,
both pacers read and write each bucket's level under an exclusive lock (flock), so
together they spend no faster than AWS refills. A level is (tokens, when), `when` on
the monotonic clock, on Linux one clock for every process of a boot; the file names
its boot (`boot_id`), since it outlives a reboot and the clock restarts at zero, and
levels of another boot, or from this clock's future, are dropped. The file is only a
cache of levels: a missing, torn or foreign one reads as full buckets (as at start),
and one that cannot be opened (a warning, once) leaves each process its own copy.

A copy is never exact, so the pacer keeps a reserve and learns from a refusal.
AWS keeps each bucket per account and region, shared by every caller (the console,
another tool, a benchmark: "Request throttling for the Amazon EC2 API"), and counts
a request when it arrives, on its clock: a burst sent after an idle gap may arrive
late, after AWS's bucket has capped, and requests sent apart arrive bunched. So no
plan spends a bucket below `reserve_tokens` of it (only the burst shrinks; the rate
stays the refill), and a throttling answer (`THROTTLING_CODES`) empties this copy of
that action's request bucket as of then and charges it the token botocore's retry of
the refused call will take, so the next requests wait for the refill instead of being
refused too (in a storm, where the copy is in debt already, that token is what it
learns). AWS's answer does not say which bucket refused, and emptying a resource
bucket (1000 tokens, 2 a second) on a guess would stall starts for minutes: those
are left as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ec2_limits import default_buckets, request_family, resource_family

log = logging.getLogger("cloudjhub.pacing")

SLACK = 0.001
DEFAULT_RESERVE = 0.1  # of each bucket's capacity (c.InstanceSpawner.ec2_bucket_reserve)
MAX_RESERVE = 0.5
# Error codes that mean "throttled" (those of botocore's retry, botocore/retries/standard.py,
# that an EC2-style API can answer).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "EC2ThrottledException",
        "SlowDown",
        "BandwidthLimitExceeded",
        "LimitExceededException",
    }
)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


Levels = dict[str, tuple[float, float]]


class BucketFile:
    """The levels of an account's buckets, kept in a file by every process pacing them."""

    def __init__(self, path: str | Path, boot: str | None = None) -> None:
        self.path = Path(path)
        self.boot = boot if boot is not None else boot_id()
        self._warned = False

    @contextlib.contextmanager
    def locked(self) -> Iterator[Levels]:
        """The levels, for the block to read and change; written back after it."""
        try:
            # Not through a link someone planted: the file is the hub's and its services'.
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            self._unusable(exc)
            yield {}  # this process's own levels alone
            return
        with os.fdopen(fd, "r+", errors="replace") as file:
            fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes
            levels = _parse(file.read(), self.boot)
            yield levels
            try:
                file.seek(0)
                file.truncate()
                file.write(json.dumps({"boot": self.boot, "levels": _dump(levels)}))
                file.flush()
            except OSError as exc:
                self._unusable(exc)

    def _unusable(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("EC2 buckets file %s unusable (%s); pacing alone", self.path, exc)


def boot_id() -> str:
    """This boot's id: the monotonic clock's levels hold only within it."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _dump(levels: Levels) -> dict[str, list[float]]:
    return {k: list(v) for k, v in levels.items()}


def _parse(text: str, boot: str) -> Levels:
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(raw, dict) or raw.get("boot") != boot or not boot:
        return {}  # another boot's clock (or a file of no boot): full buckets
    return _parse_levels(raw.get("levels"))


def _parse_levels(raw: object) -> Levels:
    levels: Levels = {}
    for name, value in raw.items() if isinstance(raw, dict) else ():
        numbers = value if isinstance(value, list) and len(value) == 2 else []
        if numbers and all(
            isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n)
            for n in numbers
        ):
            levels[str(name)] = (float(numbers[0]), float(numbers[1]))
    return levels


def reserve_tokens(capacity: float, fraction: float) -> float:
    """Tokens of a bucket no plan spends: `fraction` of it, at least 1, yet never so
    many that nothing is left to spend (a bucket of 1 keeps none; of 5, 1)."""
    if fraction <= 0:
        return 0.0
    return max(0.0, min(max(1.0, math.floor(fraction * capacity)), capacity - 1))


def check_reserve(fraction: float) -> float:
    if not (math.isfinite(fraction) and 0 <= fraction <= MAX_RESERVE):
        raise ValueError(
            f"{fraction!r}; must be a fraction of each bucket from 0 to {MAX_RESERVE:g}"
        )
    return fraction


@dataclass
class _Bucket:
    capacity: float
    refill: float
    tokens: float
    updated: float
    reserve: float = 0.0

    def level(self, now: float) -> float:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill)
            self.updated = now
        return self.tokens

    def ready_at(self, now: float, count: float) -> float:
        """When `count` tokens above the reserve will be there (a count above what the
        reserve leaves waits for a full bucket)."""
        need = min(count, self.capacity - self.reserve) + self.reserve - self.level(now)
        # A millisecond more than the arithmetic says: AWS's clock is not ours.
        return now if need <= 0 else now + need / self.refill + SLACK


@dataclass(order=True)
class Ticket:
    """One reserved request: when it may go, and how many users wait on it."""

    ready_at: float
    seq: int
    weight: int = field(default=1, compare=False)


class Pacer:
    """Every bucket of one account and region, as the hub spends them."""

    def __init__(
        self,
        buckets: Mapping[str, tuple[float, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        shared: BucketFile | None = None,
        reserve_fraction: float = DEFAULT_RESERVE,
    ) -> None:
        self.clock = clock
        self.reserve_fraction = check_reserve(reserve_fraction)
        self.shared = shared
        self.sleep = sleep
        self._sizes = {k: (v[0], v[1]) for k, v in default_buckets().items()}
        self._sizes.update(buckets or {})
        # AWS gives each action a bucket of its own, of its family's size.
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._waiting: list[Ticket] = []
        self._local = threading.local()

    def reserve(
        self, action: str, resources: int = 0, filtered: bool = True, weight: int = 1
    ) -> Ticket:
        """Take the tokens `action` needs, as of the time they will be there."""
        # The file's lock first: while another process holds it, `wait_for` (on the
        # event loop) must not wait on this thread's lock too.
        with self._levels() as levels, self._lock:
            now = self.clock()
            family = request_family(action, filtered)
            own = _own(action, family)
            needs = [(own, self._bucket(own, family, now, levels), 1.0)]
            per_instance = resource_family(action)
            if per_instance is not None and resources > 0:
                bucket = self._bucket(per_instance, per_instance, now, levels)
                needs.append((per_instance, bucket, float(resources)))
            ready = max(b.ready_at(now, n) for _, b, n in needs)
            for name, bucket, count in needs:
                bucket.tokens -= count
                levels[name] = (bucket.tokens, bucket.updated)
            self._seq += 1
            ticket = Ticket(ready, self._seq, weight)
            if ready > now:
                self._waiting.append(ticket)
            return ticket

    def wait_for(self, action: str, counts: Sequence[int], filtered: bool = True) -> list[float]:
        """For each count, seconds until that many requests of `action` could all have
        gone, if nothing else spends its bucket (estimates to show; nothing reserved).
        From this process's levels as last seen, never the shared file: it is called
        on the event loop, and an estimate needs no lock held by another process."""
        with self._lock:
            now = self.clock()
            family = request_family(action, filtered)
            bucket = self._bucket(_own(action, family), family, now, {})
            level = bucket.level(now) - bucket.reserve
            return [max(0.0, (count - level) / bucket.refill) for count in counts]

    def drain(self, action: str, filtered: bool = True) -> None:
        """AWS refused `action`: empty this copy of its request bucket (and the shared
        file's) as of now, less the token the retry takes; a debt already planned stays."""
        with self._levels() as levels, self._lock:
            now = self.clock()
            family = request_family(action, filtered)
            name = _own(action, family)
            bucket = self._bucket(name, family, now, levels)
            bucket.tokens = min(bucket.level(now), 0.0) - 1.0
            levels[name] = (bucket.tokens, bucket.updated)
            log.info("EC2 throttled %s; waiting for its bucket to refill", action)

    def _levels(self) -> contextlib.AbstractContextManager[Levels]:
        """The shared levels, locked; or none to share (this process's alone)."""
        return contextlib.nullcontext({}) if self.shared is None else self.shared.locked()

    def _bucket(self, name: str, family: str, now: float, levels: Levels) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            capacity, refill = self._sizes[family]
            reserve = reserve_tokens(capacity, self.reserve_fraction)
            bucket = self._buckets[name] = _Bucket(capacity, refill, capacity, now, reserve)
        stored = levels.get(name)
        # Where the other process left it; a time ahead of ours is not of this clock.
        if stored is not None and stored[1] <= now:
            bucket.tokens, bucket.updated = min(stored[0], bucket.capacity), stored[1]
        return bucket

    def done_waiting(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket in self._waiting:
                self._waiting.remove(ticket)

    def ahead_of(self, ticket: Ticket) -> tuple[int, float]:
        """How many users wait on requests that go before this one, and when the
        first of those goes (the queue moves): ticket.ready_at if none."""
        with self._lock:
            ahead = [t for t in self._waiting if t < ticket]
            moves = min((t.ready_at for t in ahead), default=ticket.ready_at)
            return sum(t.weight for t in ahead), moves

    @contextlib.contextmanager
    def prepaid(self) -> Iterator[None]:
        """Calls made in this block (this thread) were reserved already."""
        self._local.prepaid = True
        try:
            yield
        finally:
            self._local.prepaid = False

    # ---- every call of a boto3 client ----------------------------------------

    def attach(self, client: Any) -> None:
        """Pace every call `client` makes, unless made inside `prepaid()`, and learn
        from every attempt AWS throttles (prepaid or not, retries included)."""
        client.meta.events.register("before-call.ec2.*", self._before_call)
        # Per attempt, before botocore's retry decides; returning None leaves it to it.
        client.meta.events.register("needs-retry.ec2.*", self._after_attempt)

    def _after_attempt(
        self, response: Any, operation: Any, request_dict: Mapping[str, Any], **_: Any
    ) -> None:
        parsed = response[1] if isinstance(response, tuple) and len(response) == 2 else None
        error = parsed.get("Error", {}) if isinstance(parsed, Mapping) else {}
        if not isinstance(error, Mapping) or error.get("Code") not in THROTTLING_CODES:
            return
        body = request_dict.get("body") if isinstance(request_dict, Mapping) else None
        fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        # Also after a last attempt botocore does not retry: one token too many, once.
        try:
            self.drain(operation.name, filtered(fields))
        except Exception:  # inside botocore's retry: its answer must not become ours
            log.warning("could not note that EC2 throttled %s", operation.name, exc_info=True)

    def _before_call(self, model: Any, params: Mapping[str, Any], **_: Any) -> None:
        if getattr(self._local, "prepaid", False):
            return
        body = params.get("body")
        fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        ticket = self.reserve(model.name, resource_count(model.name, fields), filtered(fields))
        delay = ticket.ready_at - self.clock()
        try:
            if delay > 0:
                self.sleep(delay)
        finally:
            self.done_waiting(ticket)


def _own(action: str, family: str) -> str:
    """The name of `action`'s own request bucket (of its family's size)."""
    return action if family == action else f"{action} ({family})"


def filtered(fields: Mapping[str, Any]) -> bool:
    return any(str(k).startswith("Filter.") or k in ("MaxResults", "NextToken") for k in fields)


def resource_count(action: str, fields: Mapping[str, Any]) -> int:
    """Instances a serialized request launches or names (its resource tokens)."""
    if action == "RunInstances":
        try:
            return max(1, int(fields.get("MaxCount", 1)))
        except (TypeError, ValueError):
            return 1
    return sum(1 for k in fields if str(k).startswith("InstanceId."))
