"""Named servers against moto: each its own instance and home volume, found by
(user, server); removed, renamed, claimed from the pool, reaped, and told apart
from the default server (no server tag) everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub
from tornado import web

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec, launch_token
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.fleet import Fleet
from cloudjhub.pool_claims import PoolClaims
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.reaper import Reaper
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.spawner_options import SpawnError
from cloudjhub.tags import DELETED_TAG, NAME_TAG, SERVER_TAG, USER_TAG, tag_dict
from cloudjhub.usage import read_events
from tests.helpers import ApiCalls
from tests.unit.conftest import CLUSTER, REGION

Make = Callable[..., InstanceSpawner]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def tags_of(ec2: LocalCloudEc2, resource_id: str) -> dict[str, str]:
    reply = ec2.client.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])
    return {t["Key"]: t["Value"] for t in reply["Tags"]}


@pytest.fixture
def spawner_for(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Make:
    """A hub's spawner for (user, server) on the moto-backed fleet; Jupyter not started."""
    monkeypatch.setitem(Fleet._shared, (CLUSTER, REGION, ""), Fleet(ec2, max_age=0))
    monkeypatch.setattr(PoolClaims, "_shared", {})
    monkeypatch.setattr(InstanceSpawner, "_user_locks", {})

    async def no_jupyter(self: InstanceSpawner, inst: Instance, home: Any) -> str:
        return f"http://{inst.private_ip}:8888"

    monkeypatch.setattr(InstanceSpawner, "_start_jupyter", no_jupyter)
    ids: dict[str, int] = {}

    def make(user: str, server: str = "", **traits: Any) -> InstanceSpawner:
        user_id = ids.setdefault(user, len(ids) + 1)
        hub_user = SimpleNamespace(id=user_id, name=user, escaped_name=user, url=f"/user/{user}/")
        orm = SimpleNamespace(name=server, server=None, state={}, last_activity=None)
        spawner = InstanceSpawner(
            user=hub_user, hub=Hub(), orm_spawner=orm, oauth_client_id=f"jupyterhub-{user}"
        )
        spawner.cluster_name, spawner.region, spawner.aws_endpoint_url = CLUSTER, REGION, None
        spawner.worker_ami, spawner.worker_instance_type = spec.image_id, spec.instance_type
        spawner.subnet_id, spawner.key_name = spec.subnet_id, spec.key_name
        spawner.security_group_ids = list(spec.security_group_ids)
        spawner.worker_ebs_size, spawner.hibernate = spec.ebs_size, False
        spawner.user_home_ebs_size, spawner.warm_pool_size = 1, 0
        spawner.warm_pool_schedule, spawner.subnet_ids = [], []
        spawner.shared_file_system_id = ""  # no shared folder, so no workers' profile
        spawner.state_poll_interval, spawner.idle_timeout = 0.05, 3600
        spawner.usage_log = str(tmp_path / "usage.jsonl")
        spawner.warm_pool_keys_dir = ""  # no keeper records host keys here
        for name, value in traits.items():
            setattr(spawner, name, value)
        return spawner

    return make


def test_each_named_server_is_its_own_instance_with_its_own_home(
    ec2: LocalCloudEc2, spawner_for: Make, tmp_path: Path
) -> None:
    default, gpu, big = (
        spawner_for("alice"),
        spawner_for("alice", "gpu"),
        spawner_for("alice", "big"),
    )
    for spawner in (default, gpu, big):
        run(spawner._start())

    ids = [s.instance_id for s in (default, gpu, big)]
    assert len(set(ids)) == 3
    homes = [s.home_volume_id for s in (default, gpu, big)]
    assert len(set(homes)) == 3 and None not in homes
    plain, named = ec2.describe([ids[0]])[0], ec2.describe([ids[1]])[0]
    assert SERVER_TAG not in plain.tags  # the default server has no server tag
    assert named.tags[SERVER_TAG] == "gpu" and named.tags[USER_TAG] == "alice"
    assert named.tags[NAME_TAG] == f"{CLUSTER}-worker-alice-gpu"
    assert all(tags_of(ec2, v)[SERVER_TAG] == "gpu" for v in named.volumes)
    assert tags_of(ec2, homes[1])[SERVER_TAG] == "gpu"
    assert SERVER_TAG not in tags_of(ec2, homes[0])
    # A later spawn of each server finds its own instance again, by its tags alone.
    for spawner, expected in zip((default, gpu, big), ids, strict=True):
        again = spawner_for("alice", spawner.name)
        assert run(again._find_instance()).id == expected
    # The idempotency token differs per server (and the default's is what it was).
    tokens = {launch_token(CLUSTER, "alice", None, "1", s) for s in ("", "gpu", "big")}
    assert len(tokens) == 3
    assert launch_token(CLUSTER, "alice", None, "1", "") == launch_token(
        CLUSTER, "alice", None, "1"
    )
    events, _ = read_events(tmp_path / "usage.jsonl")
    assert sorted(e.server for e in events) == ["", "big", "gpu"]


def test_an_instance_without_a_server_tag_stays_the_default_servers(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Make
) -> None:
    old = ec2.launch_worker("alice", spec, "t-old")  # made before named servers

    assert run(spawner_for("alice")._find_instance()).id == old.id
    assert run(spawner_for("alice", "gpu")._find_instance()) is None  # not the named one's


def test_server_names_are_checked_and_escaped(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Make, calls: ApiCalls
) -> None:
    ec2.launch_worker("alice", spec, "t-gpu", server="gpu")
    before = sum(calls.values())
    for bad in ("*", "g?u", "a b", "x/y", "-lead", "n" * 101):
        with pytest.raises(SpawnError, match="server name") as caught:
            run(spawner_for("alice", bad)._start())
        assert bad[:20] in str(caught.value) or "n" * 20 in str(caught.value)
    assert sum(calls.values()) == before  # refused before any EC2 call
    # In an EC2 filter a server name is a literal, and matches are exact.
    assert ec2.user_workers("alice", "g?u") == [] and ec2.user_workers("alice", "*") == []
    assert ec2.home_volumes("alice", server="*") == []
    assert [i.server for i in ec2.user_workers("alice", "gpu")] == ["gpu"]


@pytest.mark.parametrize("delete_home", [False, True])
def test_removing_a_named_server_terminates_only_its_instance(
    ec2: LocalCloudEc2, spawner_for: Make, delete_home: bool
) -> None:
    default, gpu, big = (
        spawner_for("alice"),
        spawner_for("alice", "gpu"),
        spawner_for("alice", "big"),
    )
    for spawner in (default, gpu, big):
        run(spawner._start())
    gpu_id, gpu_home = gpu.instance_id, gpu.home_volume_id
    assert gpu_id and gpu_home

    removed = spawner_for("alice", "gpu", delete_home_on_remove=delete_home)
    run(removed.delete_forever())

    states = {i.id: i.state for i in ec2.describe([default.instance_id, big.instance_id, gpu_id])}
    assert states[gpu_id] in ("shutting-down", "terminated")
    assert states[default.instance_id] == states[big.instance_id] == "running"
    left = {v["VolumeId"]: tag_dict(v.get("Tags")) for v in ec2.home_volumes("alice")}
    assert default.home_volume_id in left and big.home_volume_id in left
    if delete_home:
        assert gpu_home not in left
    else:
        # Kept and not marked: a server made later with the name gets it back.
        assert DELETED_TAG not in left[gpu_home]
        again = spawner_for("alice", "gpu")
        run(again._start())
        assert again.home_volume_id == gpu_home and again.instance_id != gpu_id


def test_deleting_the_user_takes_every_server(ec2: LocalCloudEc2, spawner_for: Make) -> None:
    default, gpu = spawner_for("alice"), spawner_for("alice", "gpu")
    run(default._start())
    run(gpu._start())

    # JupyterHub calls delete_forever on each of the user's spawners; either order.
    run(spawner_for("alice", "gpu").delete_forever())
    run(spawner_for("alice").delete_forever())

    for inst in ec2.describe([default.instance_id, gpu.instance_id]):  # type: ignore[list-item]
        assert inst.state in ("shutting-down", "terminated")
    kept = ec2.home_volumes("alice", include_deleted=True)
    assert {v["VolumeId"] for v in kept} == {default.home_volume_id, gpu.home_volume_id}
    assert all(DELETED_TAG in tag_dict(v.get("Tags")) for v in kept)


def test_renaming_a_server_renames_its_tags(ec2: LocalCloudEc2, spawner_for: Make) -> None:
    gpu, other = spawner_for("alice", "gpu"), spawner_for("alice", "cpu")
    run(gpu._start())
    run(other._start())
    run(gpu.stop())
    instance_id, home = gpu.instance_id, gpu.home_volume_id
    assert instance_id and home

    run(spawner_for("alice", "gpu").rename("gpu", "cuda"))

    inst = ec2.describe([instance_id])[0]
    assert inst.tags[SERVER_TAG] == "cuda" and inst.tags[NAME_TAG] == f"{CLUSTER}-worker-alice-cuda"
    assert all(tags_of(ec2, v)[SERVER_TAG] == "cuda" for v in inst.volumes)
    assert tags_of(ec2, home)[SERVER_TAG] == "cuda"
    assert tags_of(ec2, home)[NAME_TAG] == f"{CLUSTER}-home-alice-cuda"
    assert ec2.describe([other.instance_id])[0].tags[SERVER_TAG] == "cpu"  # type: ignore[list-item]
    assert run(spawner_for("alice", "cuda")._find_instance()).id == instance_id
    assert run(spawner_for("alice", "gpu")._find_instance()) is None
    # A name the tags cannot carry is refused, and the hub keeps the old name.
    with pytest.raises(web.HTTPError) as caught:
        run(spawner_for("alice", "cuda").rename("cuda", "a*b"))
    assert caught.value.status_code == 400
    assert ec2.describe([instance_id])[0].tags[SERVER_TAG] == "cuda"


def test_a_named_server_claims_from_the_warm_pool(
    ec2: LocalCloudEc2, spec: WorkerSpec, spawner_for: Make
) -> None:
    Keeper(ec2, spec, constant_target(1, "stopped")).round()
    gpu = spawner_for("alice", "gpu", warm_pool_size=1, user_home_ebs_size=0)

    found = run(gpu._find_instance())

    assert found is not None and found.tags[SERVER_TAG] == "gpu"
    assert found.tags[NAME_TAG] == f"{CLUSTER}-worker-alice-gpu"
    assert all(tags_of(ec2, v)[SERVER_TAG] == "gpu" for v in found.volumes)
    assert run(spawner_for("alice", "gpu")._find_instance()).id == found.id
    assert run(spawner_for("alice")._find_instance()) is None  # not the default server's


class Servers:
    """The hub's view, for the reaper: alice runs only her default server."""

    def servers_in_use(self) -> set[tuple[str, str]]:
        return {("alice", "")}

    def has_server(self, user: str, server: str = "") -> bool:
        return (user, server) == ("alice", "")


def test_the_reaper_stops_a_named_servers_instance_the_hub_forgot(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    default = ec2.launch_worker("alice", spec, "t-default")
    gpu = ec2.launch_worker("alice", spec, "t-gpu", server="gpu")
    clock = SimpleNamespace(now=1000.0)
    reaper = Reaper(ec2, Servers(), 10.0, clock=lambda: clock.now)  # type: ignore[arg-type]

    reaper.round()
    clock.now += 11
    assert reaper.round() == [gpu.id]
    assert ec2.describe([default.id])[0].state == "running"
