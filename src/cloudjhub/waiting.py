"""Polling until something is true: the one loop behind every synchronous wait.

Each wait differs only in what it checks, how long it waits, how often it
looks and what it says meanwhile, so those are the arguments and the loop is
written once. The clock and the sleep are injectable (and looked up at call
time, so patching this module's `time` works too): tests need not wait.
Imports nothing of ours, so every floor may use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Polled(Generic[T]):
    """What the last check saw, after how long, and how many checks were made."""

    value: T
    elapsed: float
    checks: int


class TimedOut(Exception):
    """The deadline passed before the condition held; `last` is the final check."""

    def __init__(self, what: str, last: Polled[Any]) -> None:
        super().__init__(f"timed out after {last.elapsed:.0f}s waiting for {what}")
        self.what = what
        self.last = last

    @property
    def value(self) -> Any:
        return self.last.value

    @property
    def elapsed(self) -> float:
        return self.last.elapsed


def poll_until(
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float,
    done: Callable[[T], bool] = bool,
    what: str = "a condition",
    progress: Callable[[T, float], None] | None = None,
    progress_every: float = 0.0,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Polled[T]:
    """Call `check` until `done(value)` holds, and return what it saw.

    After a check that is not done, `progress(value, elapsed)` is told (the first
    time, then only once `progress_every` seconds have passed since it last was)
    and the loop sleeps `interval` seconds, never past the deadline, so the last
    check is made at `timeout`. If that one is not done either, TimedOut is
    raised; `check` itself may raise to give up early.
    """
    now = clock or time.monotonic
    nap = sleep or time.sleep
    started = now()
    told: float | None = None
    checks = 0
    while True:
        value = check()
        checks += 1
        elapsed = now() - started
        if done(value):
            return Polled(value, elapsed, checks)
        if elapsed >= timeout:
            raise TimedOut(what, Polled(value, elapsed, checks))
        if progress is not None and (told is None or elapsed - told >= progress_every):
            progress(value, elapsed)
            told = elapsed
        nap(max(0.0, min(interval, timeout - elapsed)))
