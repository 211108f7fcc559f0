"""The warm pool against moto: the keeper fills it, a first spawn claims from it, two
spawns race for the last member, a hub restart mid-claim, hand-made mischief, and the
reaper leaving it alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub, Server

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.fleet import Fleet
from cloudjhub.pool_claims import PoolClaims
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.reaper import Reaper
from cloudjhub.remote import CONSOLE_BEGIN, CONSOLE_END
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.tags import NAME_TAG, POOL_TAG, USER_ID_TAG, USER_TAG
from cloudjhub.warm_pool import is_member
from tests.unit.conftest import CLUSTER, REGION, SshKey


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def keeper(ec2: LocalCloudEc2, spec: WorkerSpec, size: int, state: str = "stopped") -> Keeper:
    return Keeper(ec2, spec, constant_target(size, state))


def members(ec2: LocalCloudEc2) -> list[Instance]:
    return [w for w in ec2.describe_workers() if is_member(w)]


def tags_of(ec2: LocalCloudEc2, resource_id: str) -> dict[str, str]:
    reply = ec2.client.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])
    return {t["Key"]: t["Value"] for t in reply["Tags"]}


@pytest.fixture
def spawner_for(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], InstanceSpawner]:
    """A hub's spawner (no hub) on the moto-backed fleet, with a pool of any size."""
    monkeypatch.setitem(Fleet._shared, (CLUSTER, REGION, ""), Fleet(ec2, max_age=0))
    monkeypatch.setattr(PoolClaims, "_shared", {})

    ids: dict[str, int] = {}

    def make(user: str) -> InstanceSpawner:
        user_id = ids.setdefault(user, len(ids) + 1)  # JupyterHub's id: one per user
        hub_user = SimpleNamespace(id=user_id, name=user, escaped_name=user, url=f"/user/{user}/")
        spawner = InstanceSpawner(user=hub_user, hub=Hub(), oauth_client_id=f"jupyterhub-{user}")
        spawner.cluster_name, spawner.region, spawner.aws_endpoint_url = CLUSTER, REGION, None
        spawner.worker_instance_type = "t3.medium"
        spawner.worker_ami = spec.image_id
        spawner.hibernate = False
        spawner.warm_pool_size = 1
        spawner.warm_pool_schedule = []
        spawner.user_home_ebs_size = 0
        spawner.usage_log = str(tmp_path / "usage.jsonl")
        # No keeper records host keys here: any member may be claimed (test_pool_keys.py
        # sets a directory and console-pinned hosts, where only recorded ones may).
        spawner.warm_pool_keys_dir = ""
        spawner.server = Server(base_url=f"/user/{user}/")
        return spawner

    return make


# ---- the keeper ---------------------------------------------------------------------


def test_keeper_fills_the_pool_in_one_launch_then_keeps_it_stopped(
    ec2: LocalCloudEc2, spec: WorkerSpec, calls: Any
) -> None:
    pool = keeper(ec2, spec, 3)

    first = pool.round()

    assert len(first.launched) == 3 and calls["RunInstances"] == 1
    launched = members(ec2)
    assert {i.id for i in launched} == set(first.launched)
    for inst in launched:
        assert inst.user is None and inst.tags[POOL_TAG] == "ready"
        assert inst.instance_type == "t3.medium"
        for volume in inst.volumes:  # the root volume is marked too
            assert tags_of(ec2, volume)[POOL_TAG] == "ready"
    second = pool.round()  # now running: a stopped pool stops them, launches nothing
    assert second.launched == [] and set(second.stopped) == set(first.launched)
    assert {i.state for i in members(ec2)} <= {"stopping", "stopped"}
    assert pool.round().launched == []
    assert calls["RunInstances"] == 1


def test_a_running_pool_starts_stopped_members(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    keeper(ec2, spec, 2, "stopped").round()
    keeper(ec2, spec, 2, "stopped").round()
    assert {i.state for i in members(ec2)} == {"stopped"}

    result = keeper(ec2, spec, 2, "running").round()

    assert len(result.started) == 2 and result.launched == []
    assert {i.state for i in members(ec2)} <= {"pending", "running"}


# ---- claiming -----------------------------------------------------------------------


def test_first_spawn_claims_the_pool_worker_and_the_pool_refills(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Callable[[str], InstanceSpawner],
    make_worker: Callable[..., Instance],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = keeper(ec2, spec, 1)
    pool.round()
    pool.round()  # stopped now
    [member] = members(ec2)
    assert member.state == "stopped"
    alice = spawner_for("alice")
    alice.state_poll_interval = 0.05

    async def no_jupyter(inst: Instance, home: Any) -> str:
        return f"http://{inst.private_ip}:8888"

    monkeypatch.setattr(alice, "_start_jupyter", no_jupyter)

    run(alice._start())

    assert alice.instance_id == member.id
    [claimed] = ec2.describe([member.id])
    assert claimed.state == "running"  # the spawn started it
    assert claimed.user == "alice" and POOL_TAG not in claimed.tags
    # Like a worker launched for a user: the same tags, on the instance and its volume.
    launched = ec2.launch_worker("bob", spec, "t-bob", user_id="9")
    assert set(claimed.tags) == set(launched.tags) | {NAME_TAG}
    assert claimed.tags[USER_ID_TAG] == alice.user_id
    assert claimed.tags[NAME_TAG] == f"{CLUSTER}-worker-alice"
    assert {
        k: v for k, v in claimed.tags.items() if k not in (USER_TAG, USER_ID_TAG, NAME_TAG)
    } == {
        k: v
        for k, v in ec2.describe([launched.id])[0].tags.items()
        if k not in (USER_TAG, USER_ID_TAG, NAME_TAG)
    }
    for volume in claimed.volumes:
        assert tags_of(ec2, volume)[USER_TAG] == "alice"
        assert POOL_TAG not in tags_of(ec2, volume)
    # The next login finds it by its tags, and the pool refills.
    assert run(spawner_for("alice")._find_instance()).id == member.id
    refill = pool.round()
    assert len(refill.launched) == 1 and refill.launched != [member.id]


def test_two_first_logins_race_for_the_last_pool_worker(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Callable[[str], InstanceSpawner],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keeper(ec2, spec, 1).round()
    [member] = members(ec2)
    tag_claim = ec2.tag_read_claim

    def slow_tag_claim(instance: Instance, user: str, user_id: str, server: str = "") -> None:
        time.sleep(0.3)  # wide open, if anything but one batch at a time kept them apart
        tag_claim(instance, user, user_id, server)

    monkeypatch.setattr(ec2, "tag_read_claim", slow_tag_claim)
    alice, bob = spawner_for("alice"), spawner_for("bob")

    async def both() -> list[Instance | None]:
        return list(await asyncio.gather(alice._find_instance(), bob._find_instance()))

    found = run(both())

    winners = [f for f in found if f is not None]
    assert [w.id for w in winners] == [member.id]  # exactly one; the other launches
    [now] = ec2.describe([member.id])
    assert now.user == winners[0].user and POOL_TAG not in now.tags


def test_a_claim_cut_short_by_a_hub_restart_is_the_tagged_users(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Callable[[str], InstanceSpawner]
) -> None:
    keeper(ec2, spec, 1).round()
    [member] = members(ec2)
    alice = spawner_for("alice")
    # The hub died before it dropped the pool mark.
    ec2.tag_claim(member, "alice", alice.user_id)

    assert run(spawner_for("bob")._find_instance()) is None  # not bob's, not in the pool
    found = run(alice._find_instance())

    assert found is not None and found.id == member.id
    [now] = ec2.describe([member.id])
    assert now.user == "alice" and POOL_TAG not in now.tags
    assert len(keeper(ec2, spec, 1).round().launched) == 1  # replaced in the pool


def test_pool_workers_tagged_or_terminated_by_hand_are_never_handed_out(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Callable[[str], InstanceSpawner]
) -> None:
    keeper(ec2, spec, 2).round()
    tagged, terminated = members(ec2)
    ec2.client.create_tags(Resources=[tagged.id], Tags=[{"Key": USER_TAG, "Value": "carol"}])
    ec2.client.terminate_instances(InstanceIds=[terminated.id])

    assert run(spawner_for("alice")._find_instance()) is None
    assert run(spawner_for("carol")._find_instance()) is None  # unknown state: not hers

    refill = keeper(ec2, spec, 2).round()
    assert len(refill.launched) == 2  # both replaced
    [still] = ec2.describe([tagged.id])
    assert still.state == "running" and still.tags[POOL_TAG] == "ready"  # left alone
    assert still.user == "carol"


def test_no_pool_no_extra_lookup(
    ec2: LocalCloudEc2, spawner_for: Callable[[str], InstanceSpawner], calls: Any
) -> None:
    spawner = spawner_for("alice")
    spawner.warm_pool_size = 0
    before = calls["DescribeInstances"]
    assert run(spawner._find_instance()) is None
    assert calls["DescribeInstances"] == before + 1


def test_a_stopped_pool_keeps_host_keys_from_the_first_boot_for_the_claim(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Callable[[str], InstanceSpawner],
    ssh_key: SshKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cloud-init prints host keys on the first boot only: after a stop and a start the
    console has none, so the keeper records them before stopping, and the claim pins them."""
    key = " ".join(ssh_key.public.split()[:2])
    consoles: dict[str, str] = {}
    monkeypatch.setattr(ec2, "console_output", lambda iid, _type: consoles.get(iid, "booting\n"))
    pool = Keeper(ec2, spec, constant_target(1, "stopped"), keys_dir=str(tmp_path / "keys"))
    [member] = pool.round().launched

    assert pool.round().stopped == []  # no keys on the console yet: not stopped
    consoles[member] = f"cloud-init\n{CONSOLE_BEGIN}\n{key}\n{CONSOLE_END}\n"
    assert pool.round().stopped == [member]
    consoles[member] = "second boot: keys-to-console already ran\n"

    alice = spawner_for("alice")
    alice.warm_pool_keys_dir = str(tmp_path / "keys")
    alice.ssh_host_key_source = "console"
    claimed = run(alice._find_instance())

    assert claimed is not None and claimed.id == member
    assert (alice.pinned_for, alice.pinned_host_keys) == (member, [key])


def test_a_member_that_never_prints_host_keys_is_terminated_not_stopped(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped, it could never be verified again (keys on the first boot only)."""
    monkeypatch.setattr(ec2, "console_output", lambda iid, _type: "no keys\n")
    now = [time.time()]
    pool = Keeper(
        ec2,
        spec,
        constant_target(1, "stopped"),
        clock=lambda: now[0],
        keys_dir=str(tmp_path / "keys"),
    )
    [member] = pool.round().launched
    now[0] += 3600  # long past the wait for keys

    assert pool.round().stopped == []
    assert pool.round().ended == [member]  # marked retiring, then terminated
    [state] = [i.state for i in ec2.describe([member])]
    assert state in ("shutting-down", "terminated")
    assert [m.id for m in members(ec2)] not in ([], [member])  # replaced


def test_the_keeper_never_stops_a_member_claimed_after_its_listing(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's lock is the hub's: a claim between the keeper's listing and its
    stop must win, or a user's worker is stopped under their spawn."""
    pool = keeper(ec2, spec, 1)
    [member] = pool.round().launched
    listed = ec2.describe_workers()

    ec2.tag_claim(ec2.describe([member])[0], "alice", "1")  # the hub claims it now
    monkeypatch.setattr(ec2, "describe_workers", lambda *_: listed)  # keeper's old list

    assert pool.round().stopped == []
    assert ec2.describe([member])[0].state == "running"


# ---- the reaper ---------------------------------------------------------------------


class NoServers:
    def servers_in_use(self) -> set[tuple[str, str]]:
        return set()

    def has_server(self, user: str, server: str = "") -> bool:
        return False


def test_the_reaper_never_stops_pool_workers(
    ec2: LocalCloudEc2, spec: WorkerSpec, make_worker: Callable[..., Instance]
) -> None:
    keeper(ec2, spec, 3, "running").round()
    member, by_hand, cut_short = members(ec2)
    ec2.client.create_tags(Resources=[by_hand.id], Tags=[{"Key": USER_TAG, "Value": "bob"}])
    ec2.tag_claim(cut_short, "erin", "5")  # a claim a hub restart cut short: erin's orphan now
    orphan = make_worker("dave")
    now = [1000.0]
    reaper = Reaper(ec2, NoServers(), grace=10, clock=lambda: now[0])  # type: ignore[arg-type]

    reaper.round()
    now[0] += 60
    stopped = reaper.round()

    # The controls: an ordinary orphan and a user's unfinished claim are stopped.
    assert sorted(stopped) == sorted([orphan.id, cut_short.id])
    states = {i.id: i.state for i in ec2.describe([member.id, by_hand.id])}
    assert states == {member.id: "running", by_hand.id: "running"}


def test_pool_launch_token_is_fresh_per_round(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    """A refill is a new request, never a replay of the previous round's launch."""
    pool = keeper(ec2, spec, 1)
    first = pool.round().launched
    ec2.client.terminate_instances(InstanceIds=first)
    assert pool.round().launched != first


def test_a_returning_user_claims_only_a_worker_in_their_home_volumes_zone(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Callable[[str], InstanceSpawner]
) -> None:
    """An EBS volume attaches only in its own zone: a user whose instance is gone but
    whose home volume is kept must not be handed a pool worker of another zone."""
    keeper(ec2, spec, 1).round()
    [member] = members(ec2)
    zone = member.availability_zone
    other = next(z for z in ("us-east-1a", "us-east-1b") if z != zone)
    ec2.create_home_volume("alice", 1, other, "1")
    ec2.create_home_volume("bob", 1, zone, "2")
    alice, bob = spawner_for("alice"), spawner_for("bob")
    alice.user_home_ebs_size = bob.user_home_ebs_size = 1

    assert run(alice._find_instance()) is None  # she gets a launch in her zone instead
    [still] = ec2.describe([member.id])
    assert still.user is None and is_member(still)
    got = run(bob._find_instance())
    assert got is not None and got.id == member.id and got.user == "bob"
