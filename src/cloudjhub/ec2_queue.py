"""The hub's queue to EC2: starts, stops and launches coalesced, paced, and shown.

Requests of one kind made within `window` seconds of the first become one call:
StartInstances and StopInstances (plain and hibernating stops apart) with every id,
RunInstances for every first login with the same WorkerSpec but for its extra tags
(EXTRA_TAGS with `{username}` differ per user: the tags all members share go on at
launch, each member's others with its user tag after). Each batch then
waits its turn at the hub's copy of AWS's buckets (`aws/pacing.py`); while it
waits, each user in it is told their place and the wait (`on_wait`).

When a batch fails:
- AWS fails a whole Start/StopInstances for one id in the wrong state, unknown or
  not ours, or that cannot hibernate; for those errors (`PER_ID_ERRORS`) each id is
  retried alone, so every spawner gets its own answer and no one fails for
  another's instance. Any other error (throttling botocore gave up on, a network
  failure) is every member's: retrying alone would only spend more tokens.
- A launch batch fails as a whole (AWS launches all MinCount or nothing): every
  member gets the error, and each retries with its own spawn.

Idempotency of launches: a batch of one is exactly the user's own RunInstances,
with their ClientToken (`launch_token`). A batch of several uses a token made from
its members' tokens (sorted), so botocore's retries of a timed-out call, which
resend it unchanged, get the same instances; each instance is then tagged to
exactly one member (`HubEc2.launch_for_users`). Instances a failed batch did launch
carry a claim mark and no user: nobody's, never handed out.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from .aws.client import CloudError, Instance
from .aws.hub import HubEc2, WorkerSpec
from .aws.pacing import DEFAULT_RESERVE, BucketFile, Pacer
from .executor import blocking

# Where an error is about one id of a Start/StopInstances, not the call.
PER_ID_ERRORS = frozenset(
    {
        "IncorrectInstanceState",
        "InvalidInstanceID.NotFound",
        "InvalidInstanceID.Malformed",
        "UnsupportedHibernationConfiguration",
        "UnsupportedOperation",
        "NotOurs",
        "InsufficientInstanceCapacity",
    }
)

# Ids (or instances) in one call at most: a storm becomes a few calls, none huge.
MAX_BATCH = 100

# (place in the queue, 1 = next; seconds until the call goes)
OnWait = Callable[[int, float], None]


@dataclass
class _Item:
    key: Any  # an instance id, or (user, user_id, token, server, extra tags) for a launch
    on_wait: OnWait | None
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Ec2Queue:
    """One per (cluster, region, endpoint) in a hub process, like `Fleet`."""

    _shared: ClassVar[dict[tuple[str, str, str], Ec2Queue]] = {}

    def __init__(self, ec2: HubEc2, window: float, pacer: Pacer | None) -> None:
        self.ec2 = ec2
        self.window = window
        self.pacer = pacer
        self._open: dict[Any, list[_Item]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def shared(
        cls,
        key: tuple[str, str, str],
        ec2: HubEc2,
        window: float,
        buckets: dict[str, tuple[float, float]] | None,
        buckets_file: str = "",
        reserve: float = DEFAULT_RESERVE,
    ) -> Ec2Queue:
        """The queue for `key`; `buckets` None: no client-side pacing. `buckets_file`:
        where their levels are shared with the pool's keeper ("" not shared); `reserve`:
        the fraction of each bucket the pacer keeps unspent."""
        queue = cls._shared.get(key)
        if queue is None or queue.ec2 is not ec2:  # one per connection (Fleet's)
            shared = BucketFile(buckets_file) if buckets_file else None
            pacer = (
                Pacer(buckets, shared=shared, reserve_fraction=reserve)
                if buckets is not None
                else None
            )
            if pacer is not None:
                pacer.attach(ec2.client)
            queue = cls._shared[key] = cls(ec2, window, pacer)
        return queue

    # ---- the three kinds of request -------------------------------------------

    async def start(self, instance_id: str, on_wait: OnWait | None = None) -> None:
        await self._submit(("start",), instance_id, on_wait)

    async def stop(self, instance_id: str, hibernate: bool, on_wait: OnWait | None = None) -> None:
        await self._submit(("stop", hibernate), instance_id, on_wait)

    async def launch(
        self,
        user: str,
        user_id: str,
        spec: WorkerSpec,
        client_token: str,
        on_wait: OnWait | None = None,
        server: str = "",
    ) -> Instance:
        tags = spec.extra_tags
        result: Instance = await self._submit(
            ("launch", replace(spec, extra_tags=())),
            (user, user_id, client_token, server, tags),
            on_wait,
        )
        return result

    # ---- batching ----------------------------------------------------------------

    async def _submit(self, kind: tuple[Any, ...], key: Any, on_wait: OnWait | None) -> Any:
        item = _Item(key, on_wait)
        if self.window <= 0:
            self._spawn(kind, [item])
        else:
            batch = self._open.get(kind)
            if batch is None:
                batch = self._open[kind] = []
                loop = asyncio.get_running_loop()
                loop.call_later(self.window, self._close, kind, batch)
            batch.append(item)
            if len(batch) >= MAX_BATCH:
                self._close(kind, batch)
        return await item.done

    def _close(self, kind: tuple[Any, ...], batch: list[_Item]) -> None:
        """Send `batch` (once: closed when full, and again when its window ends)."""
        if self._open.get(kind) is batch:
            del self._open[kind]
            self._spawn(kind, batch)

    def _spawn(self, kind: tuple[Any, ...], items: list[_Item]) -> None:
        task = asyncio.ensure_future(self._dispatch(kind, items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, kind: tuple[Any, ...], items: list[_Item]) -> None:
        try:
            result = await self._call(kind, items)
        except CloudError as exc:
            if len(items) > 1 and kind[0] != "launch" and exc.code in PER_ID_ERRORS:
                await asyncio.gather(*(self._dispatch(kind, [item]) for item in items))
                return
            for item in items:
                if not item.done.done():
                    item.done.set_exception(exc)
        except Exception as exc:  # a bug: every waiter hears of it, nobody hangs
            for item in items:
                if not item.done.done():
                    item.done.set_exception(exc)
        else:
            for item, value in zip(items, result, strict=True):
                if not item.done.done():
                    item.done.set_result(value)

    async def _call(self, kind: tuple[Any, ...], items: list[_Item]) -> list[Any]:
        keys = [item.key for item in items]
        action = {"start": "StartInstances", "stop": "StopInstances", "launch": "RunInstances"}
        await self._wait_turn(action[kind[0]], len(items), items)
        paid = self.pacer
        if kind[0] == "start":
            await blocking(self.ec2.start_workers, list(dict.fromkeys(keys)), paid)
            return [None] * len(items)
        if kind[0] == "stop":
            await blocking(self.ec2.stop_workers, list(dict.fromkeys(keys)), kind[1], paid)
            return [None] * len(items)
        spec: WorkerSpec = kind[1]
        if len(keys) == 1:
            user, user_id, token, server, tags = keys[0]
            own = replace(spec, extra_tags=tags)
            one = await blocking(
                self.ec2.launch_worker, user, own, token, user_id, paid=paid, server=server
            )
            return [one]
        shared = set.intersection(*(set(k[4]) for k in keys))
        common = replace(spec, extra_tags=tuple(t for t in keys[0][4] if t in shared))
        users = [
            (user, user_id, server, {k: v for k, v in tags if (k, v) not in shared})
            for user, user_id, _, server, tags in keys
        ]
        tokens = (k[2] for k in keys)
        launched = await blocking(
            self.ec2.launch_for_users, users, common, batch_token(tokens), paid
        )
        return launched

    async def _wait_turn(self, action: str, count: int, items: list[_Item]) -> None:
        """Reserve this call's tokens, then tell each member their place until it goes."""
        if self.pacer is None:
            return
        ticket = self.pacer.reserve(action, count, weight=len(items))
        try:
            while (left := ticket.ready_at - (now := self.pacer.clock())) > 0:
                ahead, moves = self.pacer.ahead_of(ticket)
                for n, item in enumerate(items):
                    if item.on_wait is not None:
                        item.on_wait(ahead + n + 1, left)
                # Told again when the queue moves, and at least every second.
                await asyncio.sleep(max(0.01, min(1.0, left, moves - now + 0.01)))
        finally:
            self.pacer.done_waiting(ticket)


def batch_token(tokens: Any) -> str:
    """The ClientToken of a launch for several users: the same members, the same token."""
    raw = "\0".join(sorted(tokens)).encode()
    return "cjb-" + hashlib.sha256(raw).hexdigest()[:60]


def waited_message(place: int, seconds: float) -> str:
    return (
        f"Waiting for EC2: you are number {place} in the queue, "
        f"about {max(1, round(seconds))} seconds"
    )


def pool_waited_message(place: int, seconds: float) -> str:
    """What a first login waiting for a warm-pool worker (`pool_claims`) is told."""
    return (
        f"Waiting for a ready instance from the warm pool: you are number {place} in "
        f"the queue, about {max(1, round(seconds))} seconds"
    )
