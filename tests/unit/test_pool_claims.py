"""A class's first logins claim warm-pool workers in one batch against moto: distinct
members in a constant number of reads, one CreateTags each and one DeleteTags; the
users left over launch; a failed tagging gives its member back and costs nobody else
theirs; zones honoured; a mark left behind is finished by the user's next spawn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub, Server

from cloudjhub import pool_batch
from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.ec2_queue import Ec2Queue
from cloudjhub.fleet import Fleet
from cloudjhub.pool_claims import PoolClaims
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.tags import POOL_CLAIMING, POOL_TAG, USER_ID_TAG, USER_TAG
from cloudjhub.warm_pool import is_member
from tests.unit.conftest import CLUSTER, REGION, Network
from tests.unit.test_warm_pool import members, tags_of

Spawners = Callable[..., InstanceSpawner]


@pytest.fixture
def spawner_for(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    network: Network,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Spawners:
    """A hub's spawner (no hub) on the moto-backed fleet, its claims gathered for 1 s
    (so every spawn of a test joins one batch), Jupyter 'started' at once."""
    monkeypatch.setitem(Fleet._shared, (CLUSTER, REGION, ""), Fleet(ec2, max_age=0))
    monkeypatch.setattr(PoolClaims, "_shared", {})
    monkeypatch.setattr(Ec2Queue, "_shared", {})
    ids: dict[str, int] = {}

    async def no_jupyter(inst: Instance, home: Any) -> str:
        return f"http://{inst.private_ip}:8888"

    def make(user: str, **traits: Any) -> InstanceSpawner:
        user_id = ids.setdefault(user, len(ids) + 1)
        hub_user = SimpleNamespace(id=user_id, name=user, escaped_name=user, url=f"/user/{user}/")
        spawner = InstanceSpawner(user=hub_user, hub=Hub(), oauth_client_id=f"jupyterhub-{user}")
        spawner.cluster_name, spawner.region, spawner.aws_endpoint_url = CLUSTER, REGION, None
        spawner.worker_instance_type, spawner.worker_ami = "t3.medium", spec.image_id
        spawner.hibernate, spawner.idle_timeout = False, 3600
        spawner.subnet_id, spawner.subnet_ids = network.subnet_id, []
        spawner.security_group_ids, spawner.key_name = list(spec.security_group_ids), spec.key_name
        spawner.worker_ebs_size = spec.ebs_size
        spawner.warm_pool_size, spawner.warm_pool_schedule = 1, []
        spawner.user_home_ebs_size = 0
        spawner.shared_file_system_id = ""  # no shared folder, so no workers' profile
        spawner.ec2_coalesce_window = 1.0
        spawner.state_poll_interval = 0.05
        spawner.usage_log = str(tmp_path / "usage.jsonl")
        # No keeper records host keys here: any member may be claimed (test_pool_keys.py
        # sets a directory and console-pinned hosts, where only recorded ones may).
        spawner.warm_pool_keys_dir = ""
        spawner.server = Server(base_url=f"/user/{user}/")
        for name, value in traits.items():
            setattr(spawner, name, value)
        monkeypatch.setattr(spawner, "_start_jupyter", no_jupyter)
        monkeypatch.setattr(spawner, "launch_tags", lambda _user, _server: {})  # no EXTRA_TAGS
        return spawner

    return make


def pool_of(ec2: LocalCloudEc2, spec: WorkerSpec, size: int) -> list[str]:
    return sorted(Keeper(ec2, spec, constant_target(size, "running")).round().launched)


def miss_lookups(ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch, times: int = 1) -> None:
    """The spawns' shared user lookup finds no one's workers the first `times` times
    (EC2's tag index lagging a launch or a claim), then sees them again."""
    users_workers = ec2.users_workers
    left = [times]

    def lagging(users: list[str]) -> dict[str, list[Instance]]:
        if left[0] > 0:
            left[0] -= 1
            return {user: [] for user in users}
        return users_workers(users)

    monkeypatch.setattr(ec2, "users_workers", lagging)


def find_all(spawners: list[InstanceSpawner]) -> list[Instance | None]:
    """Each spawn's find-or-claim step, all at once (a class at 9:00)."""

    async def together() -> list[Instance | None]:
        return list(await asyncio.gather(*(s._find_instance() for s in spawners)))

    return asyncio.run(together())


def assert_each_once(ec2: LocalCloudEc2, got: dict[str, Instance]) -> None:
    """Distinct members, each tagged to its user alone, the claim mark dropped."""
    assert len({i.id for i in got.values()}) == len(got)
    for user, inst in got.items():
        [now] = ec2.describe([inst.id])
        assert now.user == user and POOL_TAG not in now.tags, (user, now.tags)
        for volume in now.volumes:
            assert tags_of(ec2, volume)[USER_TAG] == user and POOL_TAG not in tags_of(ec2, volume)


def test_a_class_of_first_logins_claims_the_pool_in_one_batch(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Spawners, calls: Any
) -> None:
    """20 first logins, 20 running members, through the spawn itself: each user has
    their own member, for a constant number of DescribeInstances (beyond each spawn's
    own look for its user's instance), one CreateTags per user and one DeleteTags.
    Claimed one at a time, it was about four reads and two writes per user."""
    n = 20
    pool = pool_of(ec2, spec, n)
    users = [f"u{k:02d}" for k in range(n)]
    spawners = [spawner_for(u) for u in users]
    calls.clear()

    found = find_all(spawners)
    made = dict(calls)

    got = {u: f for u, f in zip(users, found, strict=True) if f is not None}
    assert sorted(i.id for i in got.values()) == pool
    assert_each_once(ec2, got)
    assert made["CreateTags"] == n and made["DeleteTags"] == 1
    # The spawns' shared user lookup; then the batch's listing, re-read and read-back.
    assert made["DescribeInstances"] <= 4, made
    assert "RunInstances" not in made and members(ec2) == []
    # And a whole spawn takes the claimed member as its own.
    url = asyncio.run(spawners[0].start())
    assert spawners[0].instance_id == got[users[0]].id and url.endswith(":8888")


def test_with_fewer_members_than_users_the_rest_launch(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    network: Network,
    spawner_for: Spawners,
    calls: Any,
) -> None:
    pool = pool_of(ec2, spec, 3)
    users = [f"u{k}" for k in range(8)]
    calls.clear()

    found = find_all([spawner_for(u) for u in users])
    made = dict(calls)

    got = {u: f for u, f in zip(users, found, strict=True) if f is not None}
    assert len(got) == 3 and sorted(i.id for i in got.values()) == pool
    assert_each_once(ec2, got)
    assert made["CreateTags"] == 3 and made["DeleteTags"] == 1
    assert made["DescribeInstances"] <= len(users) + 3, made
    # The others launch: a whole spawn of one of them gets a new instance of their own.
    late = next(u for u in users if u not in got)
    spawner = spawner_for(late)
    asyncio.run(spawner.start())
    assert spawner.instance_id not in pool
    [mine] = ec2.describe([spawner.instance_id or ""])
    assert mine.user == late


def test_a_failed_tagging_gives_that_member_back_and_fails_no_one_else(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Spawners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first CreateTags lands but its reply is lost: that member goes back to the
    pool, its user gets another, and the other users keep theirs."""
    pool = pool_of(ec2, spec, 4)
    tag = ec2.tag_read_claim
    lost: list[str] = []

    def lost_reply(instance: Instance, *args: Any) -> None:
        tag(instance, *args)
        if not lost:
            lost.append(instance.id)
            raise CloudError("read timeout", "RequestTimeout")

    monkeypatch.setattr(ec2, "tag_read_claim", lost_reply)
    users = ["ann", "bob", "cy"]

    found = find_all([spawner_for(u) for u in users])

    got = dict(zip(users, found, strict=True))
    assert all(got.values()) and lost
    assert_each_once(ec2, got)  # type: ignore[arg-type]
    assert lost[0] not in {i.id for i in got.values() if i}
    [back] = ec2.describe(lost)
    assert back.user is None and back.tags[POOL_TAG] == "ready" and USER_ID_TAG not in back.tags
    assert [m.id for m in members(ec2)] == lost and lost[0] in pool


def test_zones_in_a_batch_home_volumes_choose_first(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    network: Network,
    spawner_for: Spawners,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One member in each of two zones, listed so the one in ann's home zone comes
    first: bob, who can use either, must not take it from her; cy's home zone has
    none, so she launches there (None) and no member is tagged to her."""
    [here] = pool_of(ec2, spec, 1)
    zone = ec2.describe([here])[0].availability_zone
    other = next(z for z in ("us-east-1a", "us-east-1b") if z != zone)
    third = next(z for z in ("us-east-1c", "us-east-1d") if z not in (zone, other))
    subnet = ec2.client.create_subnet(
        VpcId=network.vpc_id, CidrBlock="10.42.2.0/24", AvailabilityZone=other
    )["Subnet"]["SubnetId"]
    [there] = pool_of(ec2, replace(spec, subnet_id=subnet), 2)
    ec2.create_home_volume("ann", 1, other, "1")
    ec2.create_home_volume("cy", 1, third, "3")
    monkeypatch.setattr(pool_batch, "_order", lambda m: (m.id != there, m.id))
    users = ["bob", "ann", "cy"]  # bob first in the queue, too

    found = find_all([spawner_for(u, user_home_ebs_size=1) for u in users])

    got = dict(zip(users, found, strict=True))
    assert got["cy"] is None
    assert got["ann"] is not None and got["ann"].id == there
    assert got["bob"] is not None and got["bob"].id == here
    assert_each_once(ec2, {u: i for u, i in got.items() if i})


def test_one_users_server_waiting_twice_in_a_batch_gets_one_member(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Spawners, calls: Any
) -> None:
    pool_of(ec2, spec, 2)
    calls.clear()

    found = find_all([spawner_for("ann"), spawner_for("ann")])

    assert found[0] is not None and found[1] is not None and found[0].id == found[1].id
    assert calls["CreateTags"] == 1 and len(members(ec2)) == 1


def test_marks_a_batch_could_not_drop_are_finished_by_each_users_next_spawn(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Spawners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DeleteTags fails (or the hub dies before it): the members are their users'
    (claim mark and user tag), never anyone else's, and each next spawn finishes it."""
    pool_of(ec2, spec, 2)
    finish = ec2.finish_read_claims
    broken = [True]

    def down(read: list[Instance]) -> None:
        if broken[0]:
            raise CloudError("endpoint unreachable", "RequestTimeout")
        finish(read)

    monkeypatch.setattr(ec2, "finish_read_claims", down)
    first = find_all([spawner_for("ann"), spawner_for("bob")])
    assert all(f is not None and f.tags[POOL_TAG] == POOL_CLAIMING for f in first)
    broken[0] = False

    assert find_all([spawner_for("cy")]) == [None]  # nothing left for anyone else
    again = find_all([spawner_for("ann"), spawner_for("bob")])

    assert [a.id for a in again if a] == [f.id for f in first if f]
    assert_each_once(ec2, {"ann": again[0], "bob": again[1]})  # type: ignore[dict-item]
    assert not [w for w in ec2.describe_workers() if is_member(w)]


def test_a_claimer_that_dies_mid_batch_leaves_no_spawn_waiting(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claimer cancelled (or broken by a BaseException) mid-batch must still answer
    every spawn of that batch, not leave them waiting until the hub's spawn timeout."""
    pool_of(ec2, spec, 2)

    async def dies(self: PoolClaims, batch: Any) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(PoolClaims, "_claim", dies)
    spawners = [spawner_for("ann", ec2_coalesce_window=0.05), spawner_for("ben")]

    async def together() -> list[Any]:
        finds = (s._find_instance() for s in spawners)
        return list(
            await asyncio.wait_for(asyncio.gather(*finds, return_exceptions=True), timeout=10)
        )

    answers = asyncio.run(together())
    assert [type(a) for a in answers] == [RuntimeError, RuntimeError], answers
    assert all(w.user is None for w in members(ec2))  # nothing was handed out


def test_a_claim_that_cannot_be_undone_gives_that_user_no_second_worker(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Spawners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CreateTags lands but its reply is lost, and EC2 cannot be read to undo it
    (throttled): the member may be the user's now, so they get no other member (one
    user, two workers) and their spawn fails; the next spawn finds the tagged one."""
    pool_of(ec2, spec, 3)
    tag, describe = ec2.tag_read_claim, ec2.describe
    lost: list[str] = []

    def lost_reply(instance: Instance, user: str, *args: Any) -> None:
        tag(instance, user, *args)
        if user == "ann" and not lost:
            lost.append(instance.id)
            raise CloudError("read timeout", "RequestTimeout")

    def throttled_once_lost(ids: list[str]) -> list[Instance]:
        if lost and ids == lost:  # the undo's read of that member
            raise CloudError("Rate exceeded", "RequestLimitExceeded")
        return describe(ids)

    monkeypatch.setattr(ec2, "tag_read_claim", lost_reply)
    monkeypatch.setattr(ec2, "describe", throttled_once_lost)
    spawners = [spawner_for("ann"), spawner_for("bob")]

    async def together() -> list[Any]:
        finds = (s._find_instance() for s in spawners)
        return list(await asyncio.gather(*finds, return_exceptions=True))

    ann, bob = asyncio.run(together())
    assert isinstance(ann, Exception), ann
    assert isinstance(bob, Instance) and bob.user == "bob"
    monkeypatch.setattr(ec2, "describe", describe)
    anns = [w.id for w in ec2.describe_workers() if w.user == "ann"]
    assert anns == lost  # never a second one
