"""The self-stop watchdog's decision and loop, with a fake clock and a fake world."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cloudjhub.worker import watchdog
from cloudjhub.worker.watchdog import Probe, Target, check_interval, stop_reason

LIMIT = 100.0


@pytest.mark.parametrize(
    ("now", "last_activity", "hub_ok_since", "since", "stops", "why"),
    [
        # Fresh: nothing seen yet, but watching only just started.
        (1050, None, None, 1000, False, None),
        # Nothing seen for the whole limit since the server started.
        (1100, None, 1100, 1000, True, "no activity"),
        # Recent activity keeps it; old activity stops it.
        (1100, 1050, 1100, 1000, False, None),
        (1200, 1099, 1200, 1000, True, "no activity"),
        (1199, 1100, 1199, 1000, False, None),
        # Active, but the hub has not answered for the limit.
        (1200, 1190, 1099, 1000, True, "hub"),
        (1200, 1190, 1101, 1000, False, None),
        # Activity older than the start (or resume) does not count against it.
        (1050, 10, 1050, 1000, False, None),
        (1000 + LIMIT, 10, 1000, 1000, True, "no activity"),
        # A resume restarts both clocks.
        (5050, 1000, 1000, 5000, False, None),
    ],
)
def test_stop_reason(
    now: float,
    last_activity: float | None,
    hub_ok_since: float | None,
    since: float,
    stops: bool,
    why: str | None,
) -> None:
    reason = stop_reason(now, last_activity, hub_ok_since, since, LIMIT)
    assert (reason is not None) == stops
    if why:
        assert reason is not None and why in reason


def test_zero_limit_never_stops() -> None:
    assert stop_reason(10**9, None, None, 0, 0) is None


def test_check_interval_is_bounded() -> None:
    assert check_interval(5) == 1.0
    assert check_interval(200) == 10.0
    assert check_interval(5400) == 60.0


def test_parse_timestamp() -> None:
    assert watchdog.parse_timestamp("1970-01-01T00:01:40.000000Z") == 100.0
    assert watchdog.parse_timestamp("1970-01-01T00:01:40") == 100.0
    assert watchdog.parse_timestamp("yesterday") is None
    assert watchdog.parse_timestamp(None) is None


@dataclass
class World:
    """A fake clock and outside world; ``script`` maps a time to changes of the world."""

    now: float = 1000.0
    activity: float | None = None
    hub: bool = True
    since: float | None = 1000.0
    shutdown_works: bool = True
    token: str | None = "tok"
    shutdowns: list[tuple[float, str]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    tokens_used: list[str] = field(default_factory=list)
    jumps: dict[int, float] = field(default_factory=dict)
    rounds: int = 0

    def sleep(self, seconds: float) -> None:
        self.rounds += 1
        self.now += seconds + self.jumps.get(self.rounds, 0.0)
        assert self.rounds < 1000, "the watchdog never stopped"

    def last_activity(self, _url: str, token: str) -> float | None:
        self.tokens_used.append(token)
        return self.activity

    def shutdown(self, reason: str) -> bool:
        self.shutdowns.append((self.now, reason))
        return self.shutdown_works

    def probe(self) -> Probe:
        return Probe(
            read_token=lambda: self.token,
            read_since=lambda: self.since,
            shutdown=self.shutdown,
            log=self.logs.append,
            clock=lambda: self.now,
            sleep=self.sleep,
            last_activity=self.last_activity,
            hub_ok=lambda _url: self.hub,
        )


TARGET = Target("http://127.0.0.1:1/user/a/api/status", "http://127.0.0.1:2/hub/api", LIMIT, 10)


def test_idle_server_is_shut_down_after_the_limit() -> None:
    world = World()
    reason = watchdog.watch(TARGET, world.probe())
    assert "no activity" in reason
    ((when, _),) = world.shutdowns
    assert 1000 + LIMIT <= when <= 1000 + LIMIT + TARGET.interval
    assert set(world.tokens_used) == {"tok"}


def test_activity_keeps_it_running_until_the_hub_is_gone() -> None:
    world = World()
    probe = world.probe()

    def busy_until_hub_dies(seconds: float) -> None:
        World.sleep(world, seconds)
        world.activity = world.now  # a kernel is always busy
        world.hub = world.now < 1500

    probe.sleep = busy_until_hub_dies
    reason = watchdog.watch(TARGET, probe)
    assert "hub" in reason
    ((when, _),) = world.shutdowns
    assert 1500 + LIMIT - TARGET.interval <= when <= 1500 + LIMIT + TARGET.interval
    assert "the hub does not answer" in world.logs


def test_sleeping_through_a_hibernation_does_not_count_as_idle() -> None:
    world = World(jumps={3: 10_000.0})
    watchdog.watch(TARGET, world.probe())
    ((when, _),) = world.shutdowns
    woke = 1000 + 3 * TARGET.interval + 10_000
    assert when >= woke + LIMIT
    assert any("woke up" in line for line in world.logs)


def test_a_failed_shutdown_is_retried() -> None:
    world = World(shutdown_works=False)
    probe = world.probe()
    original = probe.shutdown

    def fails_twice(reason: str) -> bool:
        ok = original(reason)
        world.shutdown_works = len(world.shutdowns) >= 2
        return ok

    probe.shutdown = fails_twice
    watchdog.watch(TARGET, probe)
    assert len(world.shutdowns) == 3


def test_watch_ends_when_the_server_is_no_longer_recorded() -> None:
    world = World(since=None)
    assert "no longer recorded" in watchdog.watch(TARGET, world.probe())
    assert world.shutdowns == []


def test_no_token_means_no_status_request() -> None:
    world = World(token=None, activity=10**10)
    watchdog.watch(TARGET, world.probe())
    assert world.tokens_used == []
    assert "no activity" in world.shutdowns[0][1]
