"""A storm's claims against moto, through the spawner: a spawn cancelled and retried
while its claim is in flight gets that claim's member (never a second), a member
reaching a server that already has a worker goes back to the pool (and, when it
cannot, the user keeps the worker they have), each waiting
first login is told their place and an estimate on the spawn page, and a batch's
CreateTags overlap."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from cloudjhub import pool_claims
from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.pool_claims import Claimant, PoolClaims, claim_batch
from tests.unit.test_pool_claims import (  # noqa: F401 - a fixture
    Spawners,
    find_all,
    miss_lookups,
    pool_of,
    spawner_for,
)
from tests.unit.test_warm_pool import members


def workers_of(ec2: LocalCloudEc2, user: str) -> list[str]:
    return sorted(w.id for w in ec2.describe_workers() if w.user == user and w.live)


def test_a_spawn_retried_while_its_claim_is_in_flight_gets_that_claims_member(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    calls: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ann's spawn is cancelled while her batch is being claimed (in a thread, which
    goes on); her retry finds nothing tagged yet and asks again. It waits for the
    first claim and gets its member: one worker, the other member still free."""
    pool_of(ec2, spec, 2)
    entered, release = threading.Event(), threading.Event()

    def slow_batch(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return claim_batch(*args, **kwargs)

    monkeypatch.setattr(pool_claims, "claim_batch", slow_batch)
    asked: list[str] = []
    claim = PoolClaims.claim

    def counted(self: PoolClaims, who: Claimant, *args: Any) -> Any:
        asked.append(who.user)
        return claim(self, who, *args)

    monkeypatch.setattr(PoolClaims, "claim", counted)

    async def cancel_then_retry() -> Instance | None:
        first = asyncio.ensure_future(spawner_for("ann", ec2_coalesce_window=0.05)._find_instance())
        while not entered.is_set():
            await asyncio.sleep(0.01)
        first.cancel()
        retry = asyncio.ensure_future(spawner_for("ann")._find_instance())
        while len(asked) < 2:  # the retry found nothing tagged yet and asks again
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.wait_for(retry, 10)

    calls.clear()
    got = asyncio.run(cancel_then_retry())

    assert got is not None and workers_of(ec2, "ann") == [got.id]
    assert len(members(ec2)) == 1
    assert calls["CreateTags"] == 1  # one claim: the retry never tagged (and gave back) another


def test_a_member_reaching_a_server_that_has_a_worker_goes_back_to_the_pool(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ann's look for her workers missed one that landed just after (a launch of an
    earlier spawn, or a lagging listing): the claim's member goes back and she keeps
    the worker she has."""
    pool = pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    own = ec2.launch_worker("ann", spec, "ann-earlier-launch", spawner.user_id)
    miss_lookups(ec2, monkeypatch)

    [got] = find_all([spawner])

    assert got is not None and got.id == own.id
    assert workers_of(ec2, "ann") == [own.id]
    assert [m.id for m in members(ec2)] == pool


def test_a_member_that_cannot_go_back_leaves_the_user_their_worker(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, but EC2 refuses the give-back: the spawn still gets the worker ann
    has (failing it would leave both tagged hers all the same), not an error."""
    pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    own = ec2.launch_worker("ann", spec, "ann-earlier-launch", spawner.user_id)
    miss_lookups(ec2, monkeypatch)

    def throttled(*_args: Any) -> None:
        raise CloudError("Request limit exceeded.", "RequestLimitExceeded")

    monkeypatch.setattr(ec2, "release_claim", throttled)

    [got] = find_all([spawner])

    assert got is not None and got.id == own.id


def test_first_logins_waiting_for_a_claim_see_their_place_and_an_estimate(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through each spawn's progress events (the spawn page): one is number 1, the
    other number 2, and with a CreateTags bucket refilling once a second the second's
    estimate is the longer; both told again while they wait."""
    pool_of(ec2, spec, 2)
    monkeypatch.setattr(pool_claims, "TELL_EVERY", 0.2, raising=False)
    slow_tags = {"CreateTags": [1, 1.0]}
    spawners = [spawner_for(u, ec2_request_buckets=slow_tags) for u in ("ann", "bob")]

    async def spawn_and_read() -> list[list[str]]:
        await asyncio.gather(*(s.start() for s in spawners))
        return [[e["message"] async for e in s.progress()] for s in spawners]

    said = asyncio.run(spawn_and_read())

    waits = [[m for m in one if "from the warm pool: you are number" in m] for one in said]
    assert all(len(w) >= 2 for w in waits), said
    first = sorted((w[0] for w in waits), key=lambda m: "number 2 " in m)
    assert "number 1 " in first[0] and "number 2 " in first[1], first

    def seconds(message: str) -> int:
        return int(message.rsplit("about ", 1)[1].split()[0])

    assert seconds(first[1]) > seconds(first[0]), first
    assert all("Your server is ready" in one[-1] for one in said)


def test_a_batch_tags_its_members_at_once_one_createtags_each(
    ec2: LocalCloudEc2, spec: WorkerSpec, calls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CreateTags slowed to 0.2 s each: the calls of a batch of 6 overlap (serial,
    at most one at a time), still one per claim, and each user gets their own."""
    pool_of(ec2, spec, 6)
    tag = ec2.tag_read_claim
    lock = threading.Lock()
    active, most = [0], [0]

    def slow_tag(*args: Any) -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.2)
            tag(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(ec2, "tag_read_claim", slow_tag)
    users = [f"u{k}" for k in range(6)]
    calls.clear()

    got = claim_batch(ec2, [Claimant(u, str(k), spec.instance_type) for k, u in enumerate(users)])

    assert most[0] > 1
    assert calls["CreateTags"] == 6
    assert [g.user if isinstance(g, Instance) else g for g in got] == users
    assert len({g.id for g in got if isinstance(g, Instance)}) == 6
