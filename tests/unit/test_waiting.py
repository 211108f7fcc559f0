"""poll_until, the one loop behind every synchronous wait, on a clock only sleeping moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudjhub import waiting
from cloudjhub.waiting import Polled, TimedOut, poll_until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _values(*values: str) -> Iterator[str]:
    yield from values


def test_a_condition_already_true_returns_at_once(clock: Clock) -> None:
    polled = poll_until(lambda: "ready", timeout=10, interval=1, clock=clock, sleep=clock.sleep)
    assert polled == Polled("ready", 0.0, 1)
    assert clock.slept == []


def test_polls_every_interval_and_reports_each_look_until_done(clock: Clock) -> None:
    states = _values("pending", "pending", "running")
    seen: list[tuple[str, float]] = []

    polled = poll_until(
        lambda: next(states),
        timeout=60,
        interval=2,
        done="running".__eq__,
        progress=lambda value, elapsed: seen.append((value, elapsed)),
        clock=clock,
        sleep=clock.sleep,
    )

    assert polled == Polled("running", 4.0, 3)
    assert seen == [("pending", 0.0), ("pending", 2.0)]
    assert clock.slept == [2, 2]


def test_progress_every_spaces_the_reports(clock: Clock) -> None:
    seen: list[float] = []
    with pytest.raises(TimedOut):
        poll_until(
            lambda: False,
            timeout=30,
            interval=4,
            progress=lambda _, elapsed: seen.append(elapsed),
            progress_every=10,
            clock=clock,
            sleep=clock.sleep,
        )
    assert seen == [0.0, 12.0, 24.0]  # the first look, then at least 10 s apart


def test_times_out_with_the_last_look_made_at_the_deadline(clock: Clock) -> None:
    seen: list[float] = []
    with pytest.raises(TimedOut) as raised:
        poll_until(
            lambda: "pending",
            timeout=5,
            interval=2,
            done="running".__eq__,
            what="i-1 to run",
            progress=lambda _, elapsed: seen.append(elapsed),
            clock=clock,
            sleep=clock.sleep,
        )
    late = raised.value
    assert str(late) == "timed out after 5s waiting for i-1 to run"
    assert late.last == Polled("pending", 5.0, 4)
    assert (late.value, late.elapsed, late.what) == ("pending", 5.0, "i-1 to run")
    assert clock.slept == [2, 2, 1]  # never sleeps past the deadline
    assert seen == [0.0, 2.0, 4.0]  # the look that times out is not reported as waiting


def test_timeout_zero_looks_once(clock: Clock) -> None:
    with pytest.raises(TimedOut) as raised:
        poll_until(lambda: 0, timeout=0, interval=5, clock=clock, sleep=clock.sleep)
    assert raised.value.last.checks == 1
    assert clock.slept == []


def test_a_slow_check_counts_against_the_deadline(clock: Clock) -> None:
    def slow() -> bool:
        clock.now += 3
        return False

    with pytest.raises(TimedOut) as raised:
        poll_until(slow, timeout=7, interval=1, clock=clock, sleep=clock.sleep)
    assert raised.value.last.checks == 2  # at 3 s, then (after 1 s asleep) at 7 s
    assert raised.value.elapsed == 7.0


def test_a_check_that_raises_gives_up_at_once(clock: Clock) -> None:
    looks: list[int] = []

    def failed() -> bool:
        looks.append(1)
        if len(looks) == 2:
            raise RuntimeError("the image failed")
        return False

    with pytest.raises(RuntimeError, match="the image failed"):
        poll_until(failed, timeout=60, interval=1, clock=clock, sleep=clock.sleep)
    assert len(looks) == 2 and clock.slept == [1]


def test_the_time_module_is_looked_up_when_called(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So a test can drive every wait of a command through `waiting.time`."""

    class FakeTime:
        monotonic = clock
        sleep = clock.sleep

    monkeypatch.setattr(waiting, "time", FakeTime)
    with pytest.raises(TimedOut):
        poll_until(lambda: False, timeout=900, interval=300)
    assert clock.slept == [300, 300, 300]


def test_timing_out_is_not_an_os_error() -> None:
    """Checks often swallow OSError (a refused connection); a timeout must get through."""
    assert not issubclass(TimedOut, OSError)
