"""Issue 10: a pool member that reached a server with a worker, and could not go back
to the pool then (EC2 refused the CreateTags or DeleteTags), goes back once EC2
answers again: the hub retries it in the background. The user's own worker is
untouched, and a member that became the server's only worker meanwhile is left alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudjhub import pool_giveback
from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.tags import POOL_READY, POOL_TAG, USER_TAG
from tests.unit.test_pool_claims import (  # noqa: F401 - a fixture
    Spawners,
    miss_lookups,
    pool_of,
    spawner_for,
)
from tests.unit.test_warm_pool import members, tags_of

# What each give-back's call writes, so only the give-back fails (not the claim):
# its CreateTags puts `ready` back, its DeleteTags takes the user's tags off.
GIVE_BACK = {
    "create_tags": lambda tags: {"Key": POOL_TAG, "Value": POOL_READY} in tags,
    "delete_tags": lambda tags: any(t["Key"] == USER_TAG for t in tags),
}


def refuse_give_backs(
    ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch, action: str
) -> dict[str, bool]:
    """EC2 throttles the give-back's `action` while the returned flag is set."""
    failing = {"on": True}
    real = getattr(ec2.client, action)

    def refused(**kwargs: Any) -> Any:
        if failing["on"] and GIVE_BACK[action](kwargs.get("Tags", [])):
            error = {
                "Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}
            }
            raise ClientError(error, action)
        return real(**kwargs)

    monkeypatch.setattr(ec2.client, action, refused)
    return failing


def claim_with_a_worker_landing_late(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner: InstanceSpawner, monkeypatch: pytest.MonkeyPatch
) -> Instance:
    """ann has a worker her spawn's first look misses (it landed just after): her
    claim's member must go back. Her worker, as it is."""
    own = ec2.launch_worker("ann", spec, "ann-earlier-launch", spawner.user_id)
    miss_lookups(ec2, monkeypatch)
    return own


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("action", ["create_tags", "delete_tags"])
def test_a_member_that_could_not_go_back_goes_back_once_ec2_answers(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    action: str,
) -> None:
    monkeypatch.setattr(pool_giveback, "FIRST_DELAY", 0.05)
    monkeypatch.setattr(pool_giveback, "MAX_DELAY", 0.2)
    [member] = pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    own = claim_with_a_worker_landing_late(ec2, spec, spawner, monkeypatch)
    failing = refuse_give_backs(ec2, monkeypatch, action)
    own_tags = {v: tags_of(ec2, v) for v in (own.id, *own.volumes)}

    async def spawn_then_recover() -> Instance | None:
        got = await spawner._find_instance()
        await asyncio.sleep(0.5)  # a few retries, all refused
        assert members(ec2) == []  # the member is still out of the pool, a stray
        failing["on"] = False
        await until(lambda: [m.id for m in members(ec2)] == [member])
        return got

    got = asyncio.run(spawn_then_recover())

    assert got is not None and got.id == own.id
    [back] = ec2.describe([member])
    assert back.user is None and back.tags[POOL_TAG] == POOL_READY
    for volume in back.volumes:
        assert USER_TAG not in tags_of(ec2, volume)
    # ann's own worker: untouched, still hers and her only one.
    [now] = ec2.describe([own.id])
    assert now.state == "running"  # never stopped, terminated or retagged
    assert {v: tags_of(ec2, v) for v in (own.id, *own.volumes)} == own_tags
    assert [w.id for w in ec2.describe_workers() if w.user == "ann" and w.live] == [own.id]


def test_a_stray_that_became_the_servers_only_worker_is_left_alone(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ann's kept worker is terminated before EC2 answers again: the member may be
    what her next spawn adopts, so the retry no longer takes it."""
    monkeypatch.setattr(pool_giveback, "FIRST_DELAY", 0.05)
    monkeypatch.setattr(pool_giveback, "MAX_DELAY", 0.1)
    [member] = pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    own = claim_with_a_worker_landing_late(ec2, spec, spawner, monkeypatch)
    failing = refuse_give_backs(ec2, monkeypatch, "create_tags")
    tries: list[bool] = []
    real_try = pool_giveback.GiveBacks._try

    def counted(self: pool_giveback.GiveBacks, *args: Any) -> list[Instance]:
        tries.append(failing["on"])
        return real_try(self, *args)

    monkeypatch.setattr(pool_giveback.GiveBacks, "_try", counted)

    async def spawn_then_lose_the_worker() -> None:
        await spawner._find_instance()
        await until(lambda: len(tries) >= 2)
        ec2.client.terminate_instances(InstanceIds=[own.id])
        failing["on"] = False
        await until(lambda: False in tries)  # a try after EC2 answers again
        await asyncio.sleep(0.3)

    asyncio.run(spawn_then_lose_the_worker())

    [now] = ec2.describe([member])
    assert now.live and now.user == "ann" and members(ec2) == []


def held_give_back(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> tuple[str, Instance, InstanceSpawner, threading.Event, threading.Event]:
    """ann's member goes back later; the retry's `where` ("read": after its read,
    "release": inside its release) waits for the gate. (member, own, spawner,
    reached, gate)."""
    monkeypatch.setattr(pool_giveback, "FIRST_DELAY", 0.05)
    monkeypatch.setattr(pool_giveback, "MAX_DELAY", 0.1)
    [member] = pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    own = claim_with_a_worker_landing_late(ec2, spec, spawner, monkeypatch)
    failing = refuse_give_backs(ec2, monkeypatch, "create_tags")
    reached, gate = threading.Event(), threading.Event()
    real_try, real_release = pool_giveback.GiveBacks._try, ec2.release_claim

    def read_then_wait(self: pool_giveback.GiveBacks, *args: Any) -> Any:
        failing["on"] = False  # this try's release goes through
        got = real_try(self, *args)
        if where == "read":
            reached.set()
            gate.wait(10)
        return got

    def slow_release(*args: Any, **kwargs: Any) -> None:
        if where == "release" and not failing["on"]:
            reached.set()
            gate.wait(10)
        real_release(*args, **kwargs)

    monkeypatch.setattr(pool_giveback.GiveBacks, "_try", read_then_wait)
    monkeypatch.setattr(ec2, "release_claim", slow_release)
    return member, own, spawner, reached, gate


@pytest.mark.parametrize("where", ["read", "release"])
def test_a_spawn_never_adopts_a_member_being_given_back(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """Review M1: the retry read both instances (both ann's, live) and decided to give
    the member back; before its release lands, ann's kept worker dies and her next
    spawn looks. It must not end up on a member that then goes back to the pool."""
    member, own, spawner, reached, gate = held_give_back(ec2, spec, spawner_for, monkeypatch, where)

    async def race() -> tuple[Instance | None, Instance | None]:
        first = await spawner._find_instance()
        await until(reached.is_set)
        ec2.client.terminate_instances(InstanceIds=[own.id])
        again = await spawner._find_instance()
        gate.set()
        await asyncio.sleep(0.5)  # the retry ends (released, or left alone)
        return first, again

    first, again = asyncio.run(race())

    assert first is not None and first.id == own.id
    assert again is not None
    [now] = ec2.describe([member])
    if again.id == member:  # adopted: then it must still be ann's, out of the pool
        assert now.live and now.user == "ann" and members(ec2) == []
    else:  # skipped: it went back (or stays hers), never both
        assert again.id == own.id and not again.live
        assert now.user is None or members(ec2) == []


def counted_tries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    tries: list[int] = []
    real_try = pool_giveback.GiveBacks._try

    def counted(self: pool_giveback.GiveBacks, *args: Any) -> Any:
        tries.append(1)
        return real_try(self, *args)

    monkeypatch.setattr(pool_giveback.GiveBacks, "_try", counted)
    return tries


def refuse_for_good(ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    real = ec2.client.create_tags

    def refused(**kwargs: Any) -> Any:
        if GIVE_BACK["create_tags"](kwargs.get("Tags", [])):
            raise ClientError({"Error": {"Code": code, "Message": code}}, "create_tags")
        return real(**kwargs)

    monkeypatch.setattr(ec2.client, "create_tags", refused)


@pytest.mark.parametrize(
    ("code", "max_tries", "expected"),
    [("UnauthorizedOperation", 50, 1), ("AccessDenied", 50, 1), ("RequestLimitExceeded", 3, 3)],
)
def test_give_back_retries_stop(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    max_tries: int,
    expected: int,
) -> None:
    """Review L3: a permanent refusal is tried once; a transient one a bounded number
    of times; then the retries stop (the member stays ann's, as before the module)."""
    monkeypatch.setattr(pool_giveback, "FIRST_DELAY", 0.01)
    monkeypatch.setattr(pool_giveback, "MAX_DELAY", 0.01)
    monkeypatch.setattr(pool_giveback, "MAX_TRIES", max_tries, raising=False)
    [member] = pool_of(ec2, spec, 1)
    spawner = spawner_for("ann")
    claim_with_a_worker_landing_late(ec2, spec, spawner, monkeypatch)
    refuse_for_good(ec2, monkeypatch, code)
    tries = counted_tries(monkeypatch)

    async def spawn_then_wait() -> None:
        await spawner._find_instance()
        await until(lambda: len(tries) >= expected)
        await asyncio.sleep(0.5)  # room for many more tries, were there to be any

    asyncio.run(spawn_then_wait())

    assert len(tries) == expected
    [now] = ec2.describe([member])
    assert now.user == "ann"


def test_of_two_members_marked_for_one_server_only_the_one_a_spawn_would_not_adopt_goes_back(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    """The kept worker still carries the pool's claim mark (a claim cut short): a
    spawn then adopts by `adopted_first`, so only the other may go back; never both."""
    ids = pool_of(ec2, spec, 2)
    for read in ec2.describe(ids):
        ec2.tag_claim(read, "ann", "1")
    first, second = sorted(ec2.describe(ids), key=pool_giveback.adopted_first)
    assert POOL_TAG in first.tags and POOL_TAG in second.tags  # both still marked

    assert pool_giveback.may_give_back(first, second, "ann", "")
    assert not pool_giveback.may_give_back(second, first, "ann", "")
    assert not pool_giveback.may_give_back(first, second, "bob", "")
