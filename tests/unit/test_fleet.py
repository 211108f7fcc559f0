"""The shared fleet view: one DescribeInstances for many concurrent callers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.fleet import Fleet
from tests.helpers import ApiCalls

MakeWorker = Callable[..., Instance]

MAX_AGE = 1.0


@pytest.fixture
def forty(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, make_worker: MakeWorker, calls: ApiCalls
) -> list[Instance]:
    """40 workers of our cluster, 5 of another one; the call counter starts at zero."""
    ours = [make_worker(f"user{i:02d}") for i in range(40)]
    for i in range(5):
        make_worker(f"user{i:02d}", other_ec2)
    calls.clear()
    return ours


async def test_concurrent_refreshes_share_one_describe(
    ec2: LocalCloudEc2, forty: list[Instance], calls: ApiCalls
) -> None:
    fleet = Fleet(ec2, max_age=MAX_AGE)
    await asyncio.gather(*(fleet.refresh() for _ in range(40)))
    assert calls["DescribeInstances"] == 1
    assert {i.id for i in fleet.instances()} == {i.id for i in forty}
    assert all(i.cluster == ec2.cluster for i in fleet.instances())

    # Within max_age: served from the cache.
    await asyncio.gather(*(fleet.refresh() for _ in range(40)))
    await fleet.refresh()
    assert fleet.age < MAX_AGE
    assert calls["DescribeInstances"] == 1

    # After max_age: exactly one more, however many ask at once.
    await asyncio.sleep(MAX_AGE + 0.05)
    await asyncio.gather(*(fleet.refresh() for _ in range(40)))
    assert calls["DescribeInstances"] == 2
    assert sum(calls.values()) == 2


async def test_explicit_max_age_overrides_the_default(
    ec2: LocalCloudEc2, forty: list[Instance], calls: ApiCalls
) -> None:
    fleet = Fleet(ec2, max_age=3600)
    await fleet.refresh()
    await fleet.refresh()
    assert calls["DescribeInstances"] == 1
    await fleet.refresh(max_age=0)
    assert calls["DescribeInstances"] == 2


async def test_the_event_loop_stays_free_during_a_refresh(
    ec2: LocalCloudEc2, forty: list[Instance]
) -> None:
    """The describe runs in a thread: other coroutines keep running meanwhile."""
    fleet = Fleet(ec2)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    def slow_describe(**_: object) -> None:
        time.sleep(0.2)

    ec2.client.meta.events.register("before-call.ec2.DescribeInstances", slow_describe)
    task = asyncio.ensure_future(ticker())
    await fleet.refresh()
    done.set()
    await task
    assert ticks > 10
    assert len(fleet.instances()) == 40


async def test_a_failed_refresh_is_retried_by_the_next_caller(
    ec2: LocalCloudEc2, forty: list[Instance]
) -> None:
    fleet = Fleet(ec2, max_age=MAX_AGE)
    fail = {"on": True}

    def broken(**_: object) -> None:
        if fail["on"]:
            raise ConnectionError("endpoint down")

    ec2.client.meta.events.register("before-call.ec2.DescribeInstances", broken)
    results = await asyncio.gather(*(fleet.refresh() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert fleet.instances() == []
    fail["on"] = False
    await fleet.refresh()
    assert len(fleet.instances()) == 40


async def test_for_user_finds_the_live_instance_and_ignores_terminated(
    ec2: LocalCloudEc2, make_worker: MakeWorker
) -> None:
    old = make_worker("alice")
    ec2.terminate([old.id])
    new = make_worker("alice")
    gone = make_worker("bob")
    ec2.terminate([gone.id])
    make_worker("carol")

    fleet = Fleet(ec2, max_age=MAX_AGE)
    await fleet.refresh()
    assert fleet.get(old.id) is not None
    assert fleet.get(old.id).state == "terminated"  # type: ignore[union-attr]
    found = fleet.for_user("alice")
    assert found is not None and found.id == new.id
    assert fleet.for_user("bob") is None
    assert fleet.for_user("nobody") is None
    carol = fleet.for_user("carol")
    assert carol is not None and carol.user == "carol"


async def test_for_user_prefers_a_running_instance(
    ec2: LocalCloudEc2, make_worker: MakeWorker
) -> None:
    first = make_worker("alice")
    second = make_worker("alice")
    ec2.stop(second.id)
    fleet = Fleet(ec2)
    await fleet.refresh()
    found = fleet.for_user("alice")
    assert found is not None and found.id == first.id
    assert found.state == "running"


async def test_remember_shows_a_new_instance_before_the_next_refresh(
    ec2: LocalCloudEc2,
    make_worker: MakeWorker,
    calls: ApiCalls,
) -> None:
    make_worker("alice")
    fleet = Fleet(ec2, max_age=3600)
    await fleet.refresh()
    assert fleet.for_user("dave") is None

    launched = make_worker("dave")
    await fleet.refresh()  # still fresh: no describe, so the launch is not seen yet
    assert calls["DescribeInstances"] == 1
    assert fleet.for_user("dave") is None

    fleet.remember(launched)
    assert fleet.get(launched.id) == launched
    assert fleet.for_user("dave") == launched
    assert calls["DescribeInstances"] == 1

    # A later report about the same instance replaces the earlier one.
    fleet.remember(replace(launched, state="stopped"))
    stopped = fleet.for_user("dave")
    assert stopped is not None and stopped.state == "stopped"


async def test_shared_fleet_is_one_per_key(ec2: LocalCloudEc2, other_ec2: LocalCloudEc2) -> None:
    key = ("alpha", "us-east-1", "test-shared-fleet")
    connects: list[LocalCloudEc2] = []

    def connect() -> LocalCloudEc2:
        connects.append(ec2)
        return ec2

    try:
        a = Fleet.shared(key, connect, 5.0)
        b = Fleet.shared(key, connect, 5.0)
        c = Fleet.shared((*key[:2], "other-endpoint"), lambda: other_ec2, 5.0)
        assert a is b
        assert c is not a
        assert len(connects) == 1
        assert a.ec2 is ec2 and c.ec2 is other_ec2
    finally:
        Fleet._shared.pop(key, None)
        Fleet._shared.pop((*key[:2], "other-endpoint"), None)


async def test_a_launch_survives_a_refresh_that_does_not_list_it_yet(
    ec2: LocalCloudEc2, make_worker: MakeWorker
) -> None:
    """AWS's DescribeInstances can lag RunInstances; the launch must not vanish."""
    known = make_worker("alice")
    fleet = Fleet(ec2, max_age=0)
    await fleet.refresh()
    lagging = replace(known, id="i-0123456789abcdef0", tags={**known.tags})
    fleet.remember(lagging)
    await fleet.refresh()
    assert fleet.get(lagging.id) == lagging
    assert fleet.get(known.id) is not None
