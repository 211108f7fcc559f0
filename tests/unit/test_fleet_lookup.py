"""A storm's spawns ask "which workers are this user's?" together: the names asked
while one DescribeInstances is in flight go in the next, so 30 restarts cost two
calls, not thirty; each spawn still gets its own worker and no one else's."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import Any

import pytest

from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.fleet import Fleet
from tests.helpers import ApiCalls
from tests.unit.test_pool_claims import (  # noqa: F401 - a fixture
    Spawners,
    find_all,
    miss_lookups,
    pool_of,
    spawner_for,
)
from tests.unit.test_warm_pool import members

USERS = 30


def test_a_storm_of_restarts_shares_its_lookups_and_each_gets_their_own(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    calls: ApiCalls,
) -> None:
    spawners = [spawner_for(f"student{n:02d}") for n in range(USERS)]
    own = {}
    for n, s in enumerate(spawners):
        own[s.user.name] = ec2.launch_worker(s.user.name, spec, f"t-{n}", str(s.user_id))
        if n % 2:  # half know their instance from the hub's state (a restart)
            s.instance_id = own[s.user.name].id
    calls.clear()

    got = find_all(spawners)

    assert [g.id if g else None for g in got] == [own[s.user.name].id for s in spawners]
    # The first spawn asks alone; every other asked while it was in flight.
    assert calls["DescribeInstances"] <= 2, calls


def test_a_name_is_matched_exactly_not_as_a_pattern(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    ann = ec2.launch_worker("ann", spec, "t-ann")
    annie = ec2.launch_worker("annie", spec, "t-annie")

    found = ec2.users_workers(["an*", "ann", "a?nie"])

    assert {u: [i.id for i in v] for u, v in found.items()} == {
        "an*": [],
        "ann": [ann.id],
        "a?nie": [],
    }
    assert [i.id for i in ec2.users_workers(["annie"])["annie"]] == [annie.id]


def test_a_lookup_answers_for_the_server_asked(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    default = ec2.launch_worker("ann", spec, "t-1")
    gpu = ec2.launch_worker("ann", spec, "t-2", server="gpu")
    fleet = Fleet(ec2, max_age=3600)

    async def both() -> tuple[list[Instance], list[Instance], list[Instance]]:
        return await asyncio.gather(
            fleet.user_workers("ann", ""),
            fleet.user_workers("ann", "gpu"),
            fleet.user_workers("ann", None),
        )

    first, named, every = asyncio.run(both())

    assert [i.id for i in first] == [default.id]
    assert [i.id for i in named] == [gpu.id]
    assert sorted(i.id for i in every) == sorted([default.id, gpu.id])


def test_a_failed_lookup_fails_each_waiter_and_the_next_one_asks_again(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = ec2.launch_worker("ann", spec, "t-1")
    fleet = Fleet(ec2, max_age=3600)
    real = ec2.users_workers
    refused = [True]

    def flaky(users: list[str]) -> dict[str, list[Instance]]:
        if refused[0]:
            raise CloudError("Request limit exceeded.", "RequestLimitExceeded")
        return real(users)

    monkeypatch.setattr(ec2, "users_workers", flaky)

    async def storm() -> list[Any]:
        return await asyncio.gather(
            *(fleet.user_workers(u, "") for u in ("ann", "bob", "cy")), return_exceptions=True
        )

    answers = asyncio.run(storm())
    assert all(isinstance(a, CloudError) for a in answers), answers
    refused[0] = False
    assert [i.id for i in asyncio.run(fleet.user_workers("ann", ""))] == [mine.id]


def stall(
    ec2: LocalCloudEc2, read: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Make `ec2.<read>` slow: its answer is of when it began (every instance still
    pending), given once the test sets the second event; the first is set as it begins."""
    begun, go_on = threading.Event(), threading.Event()
    real = getattr(ec2, read)

    def slow(*args: Any) -> list[Instance]:
        found = [replace(i, state="pending") for i in real(*args)]
        begun.set()
        assert go_on.wait(10)
        return found

    monkeypatch.setattr(ec2, read, slow)
    return begun, go_on


def test_a_listing_begun_before_a_watched_read_does_not_undo_it(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-cluster listing is slow (its answer is of when it began); a spawn's
    watched read lands meanwhile: the fleet keeps the fresher state (review 7 L1)."""
    worker = ec2.launch_worker("ann", spec, "t-1")
    fleet = Fleet(ec2, max_age=0)
    listed, go_on = stall(ec2, "describe_workers", monkeypatch)

    async def race() -> None:
        listing = asyncio.ensure_future(fleet.refresh(0))
        while not listed.is_set():
            await asyncio.sleep(0.01)
        with fleet.watching(worker.id):
            await fleet.refresh_watched(0)
        assert fleet.get(worker.id) is not None and fleet.get(worker.id).state == "running"
        go_on.set()
        await listing

    asyncio.run(race())
    after = fleet.get(worker.id)
    assert after is not None and after.state == "running"
    # The next listing, begun after the read, is believed again.
    monkeypatch.setattr(ec2, "describe_workers", lambda user=None: [replace(worker, state="x")])
    asyncio.run(fleet.refresh(0))
    assert fleet.get(worker.id).state == "x"  # type: ignore[union-attr]


def test_a_recorded_instance_the_tag_lookup_misses_is_asked_by_id(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    calls: ApiCalls,
) -> None:
    """EC2's tag index lags the CreateTags of a claim: the restart finds the instance
    the hub recorded by its id, and claims no second worker from the pool (not even
    one it would give back)."""
    pool = pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    own = ec2.launch_worker("ann", spec, "t-ann", str(spawner.user_id))
    spawner.instance_id = own.id
    miss_lookups(ec2, monkeypatch, times=1_000)
    calls.clear()

    [got] = find_all([spawner])

    assert got is not None and got.id == own.id
    assert [m.id for m in members(ec2)] == pool
    assert calls["CreateTags"] == 0 and calls["DeleteTags"] == 0, calls


def test_a_recorded_instance_now_someone_elses_is_not_taken(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
) -> None:
    """The id in ann's state names bob's worker now (state restored from a backup):
    by id it is found, and refused; ann gets a worker of her own."""
    spawner = spawner_for("ann")
    bob = ec2.launch_worker("bob", spec, "t-bob")
    spawner.instance_id = bob.id

    [got] = find_all([spawner])

    assert got is None or got.id != bob.id
    [still] = ec2.describe([bob.id])
    assert still.user == "bob"


def test_names_asked_while_a_lookup_is_in_flight_go_together_in_the_next(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet(ec2, max_age=3600)
    mine = {u: ec2.launch_worker(u, spec, f"t-{u}").id for u in ("a", "b", "c", "d")}
    real = ec2.users_workers
    asked: list[list[str]] = []
    in_flight, go_on = threading.Event(), threading.Event()

    def gated(users: list[str]) -> dict[str, list[Instance]]:
        asked.append(users)
        in_flight.set()
        assert go_on.wait(10)
        return real(users)

    monkeypatch.setattr(ec2, "users_workers", gated)

    async def storm() -> list[list[Instance]]:
        first = asyncio.ensure_future(fleet.user_workers("a", ""))
        while not in_flight.is_set():
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(fleet.user_workers(u, "")) for u in ("b", "c", "d")]
        await asyncio.sleep(0.05)
        go_on.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(storm())

    assert asked == [["a"], ["b", "c", "d"]]
    assert [[i.id for i in a] for a in answers] == [[mine[u]] for u in ("a", "b", "c", "d")]


def test_a_refused_group_fails_only_its_own_names(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name longer than a tag value goes alone; EC2 refusing it fails that login
    only, not the storm it arrived with."""
    fleet = Fleet(ec2, max_age=3600)
    ann = ec2.launch_worker("ann", spec, "t-ann")
    odd = "x" * 300
    real = ec2.users_workers

    def refusing(users: list[str]) -> dict[str, list[Instance]]:
        if odd in users:
            raise CloudError("Filter value too long", "InvalidParameterValue")
        return real(users)

    monkeypatch.setattr(ec2, "users_workers", refusing)

    async def storm() -> list[Any]:
        return await asyncio.gather(
            *(fleet.user_workers(u, "") for u in ("ann", odd, "bob")), return_exceptions=True
        )

    got_ann, got_odd, got_bob = asyncio.run(storm())
    assert [i.id for i in got_ann] == [ann.id] and got_bob == []
    assert isinstance(got_odd, CloudError)


def test_names_are_sent_escaped(ec2: LocalCloudEc2, alpha_client: Any) -> None:
    """A user named `*` must not make every lookup list every worker of the cluster."""
    sent: list[Any] = []
    alpha_client.meta.events.register(
        "provide-client-params.ec2.DescribeInstances",
        lambda params, **_: sent.append(params["Filters"]),
    )
    ec2.users_workers(["*", "a?c", "d\\e"])
    [filters] = sent
    [names] = [f["Values"] for f in filters if f["Name"] == "tag:cloudjhub:user"]
    assert sorted(names) == sorted(["\\*", "a\\?c", "d\\\\e"])


def test_a_restart_keeps_the_recorded_instance_over_a_newer_one(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
) -> None:
    """Two live workers of one server (a fault): the hub's recorded one is adopted,
    as before the shared lookups, not the newest."""
    spawner = spawner_for("ann")
    older = ec2.launch_worker("ann", spec, "t-1", str(spawner.user_id))
    newer = ec2.launch_worker("ann", spec, "t-2", str(spawner.user_id))
    recorded = min((older, newer), key=lambda i: (i.launched_at, i.id))
    spawner.instance_id = recorded.id

    [got] = find_all([spawner])

    assert got is not None and got.id == recorded.id


def test_a_recorded_instance_terminated_and_missed_by_the_tags_is_what_a_launch_replaces(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    calls: ApiCalls,
) -> None:
    """The id read by id is not adopted (terminated) but still counts as the user's:
    the spawn replaces it (its id carried over), it claims no pool member."""
    pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    own = ec2.launch_worker("ann", spec, "t-ann", str(spawner.user_id))
    ec2.client.terminate_instances(InstanceIds=[own.id])
    spawner.instance_id = own.id
    miss_lookups(ec2, monkeypatch, times=1_000)
    calls.clear()

    [got] = find_all([spawner])

    assert got is not None and got.id == own.id and got.gone
    assert calls["CreateTags"] == 0, calls


def test_a_watched_read_older_than_a_listing_does_not_undo_it(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watched read is slow; a whole-cluster listing begins and ends meanwhile:
    the listing's state stays."""
    worker = ec2.launch_worker("ann", spec, "t-1")
    fleet = Fleet(ec2, max_age=0)
    reading, go_on = stall(ec2, "describe", monkeypatch)

    async def race() -> None:
        with fleet.watching(worker.id):
            read = asyncio.ensure_future(fleet.refresh_watched(0))
            while not reading.is_set():
                await asyncio.sleep(0.01)
            await fleet.refresh(0)  # begun after the read: running
            go_on.set()
            await read

    asyncio.run(race())
    after = fleet.get(worker.id)
    assert after is not None and after.state == "running"
