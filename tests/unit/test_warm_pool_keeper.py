"""The pool's keeper against moto with an injected clock: it grows into a schedule's
window and shrinks after it, retires members of an old type or image, records host
keys without leaving files behind, and a claim the keeper stopped is started again."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.pool_keeper import Keeper, PoolTarget, constant_target
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.tags import POOL_TAG
from cloudjhub.warm_pool import record_host_keys
from tests.unit.conftest import ec2_client
from tests.unit.test_warm_pool import members, spawner_for  # noqa: F401 (a fixture)


def live(ec2: LocalCloudEc2, ids: list[str]) -> dict[str, str]:
    return {i.id: i.state for i in ec2.describe(ids) if i.live}


def test_the_keeper_grows_into_a_window_and_shrinks_after_it(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    from cloudjhub.pool_schedule import PoolPlan, parse_windows

    window = {"cron": "50 8 * * MON", "duration": 5400, "size": 3, "state": "running"}
    plan = PoolPlan(PoolTarget(1, "stopped"), parse_windows([window]), ZoneInfo("Europe/Berlin"))
    now = [datetime(2026, 11, 30, 7, 40, tzinfo=UTC).timestamp()]  # 08:40 in Berlin
    pool = Keeper(ec2, spec, plan, clock=lambda: now[0])

    [first] = pool.round().launched
    pool.round()  # stopped
    now[0] += 15 * 60  # 08:55 Berlin: the window is open
    grown = pool.round()
    assert len(grown.launched) == 2 and grown.started == [first]
    assert len(members(ec2)) == 3

    now[0] += 90 * 60  # 10:25 Berlin: closed
    shrunk = pool.round()

    assert len(shrunk.terminated) == 2
    [kept] = members(ec2)
    assert kept.id in [first, *grown.launched] and kept.id not in shrunk.terminated
    assert shrunk.stopped == [kept.id]
    then = pool.round()  # the two marked retiring go now
    assert sorted(then.ended) == sorted(shrunk.terminated)
    assert live(ec2, [first, *grown.launched]) == {kept.id: "stopped"}
    assert then.launched == [] and pool.round().launched == []  # stays at its base size


def test_the_pool_shrinks_stopped_first_and_never_takes_a_claimed_member(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = [4]
    pool = Keeper(ec2, spec, lambda _now: PoolTarget(size[0], "running"))
    launched = pool.round().launched
    ec2.stop(launched[2])
    size[0] = 3

    assert pool.round().terminated == [launched[2]]  # the stopped one goes first
    assert pool.round().ended == [launched[2]]

    listed = ec2.describe_workers()
    claimed = launched[1]
    ec2.tag_claim(ec2.describe([claimed])[0], "alice", "1")  # the hub claims it now
    monkeypatch.setattr(ec2, "describe_workers", lambda *_: listed)  # keeper's old list
    size[0] = 0

    result = pool.round()

    # Each read again first: the claimed one is alice's and stays.
    assert sorted(result.terminated) == sorted([launched[0], launched[3]])
    monkeypatch.undo()
    assert sorted(pool.round().ended) == sorted([launched[0], launched[3]])
    assert live(ec2, launched) == {claimed: "running"}
    [after] = ec2.describe([claimed])
    assert after.user == "alice"


def other_image(ec2: LocalCloudEc2, image_id: str) -> str:
    images = [i["ImageId"] for i in ec2.public_images() if i.get("State") == "available"]
    return next(i for i in sorted(images) if i != image_id)


@pytest.mark.parametrize("change", ["image", "type"])
def test_members_of_an_old_image_or_type_are_retired_never_handed_out(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Callable[[str], InstanceSpawner],  # noqa: F811
    change: str,
) -> None:
    old = Keeper(ec2, spec, constant_target(2, "stopped")).round().launched
    if change == "image":
        new_spec = dataclasses.replace(spec, image_id=other_image(ec2, spec.image_id))
    else:
        new_spec = dataclasses.replace(spec, instance_type="t3.large")
    alice = spawner_for("alice")
    alice.worker_ami, alice.worker_instance_type = new_spec.image_id, new_spec.instance_type

    assert asyncio.run(alice._find_instance()) is None  # an old member is never handed out
    result = Keeper(ec2, new_spec, constant_target(2, "stopped")).round()

    assert sorted(result.retired) == sorted(old)
    assert sorted(Keeper(ec2, new_spec, constant_target(2, "stopped")).round().ended) == sorted(old)
    assert live(ec2, old) == {}
    fresh = ec2.describe(result.launched)
    assert len(fresh) == 2
    assert {(i.image_id, i.instance_type) for i in fresh} == {
        (new_spec.image_id, new_spec.instance_type)
    }


def test_record_host_keys_leaves_no_temporary_file_when_it_fails(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "i-0123456789abcdef0.keys").mkdir()  # os.replace cannot replace a directory

    with pytest.raises(OSError):
        record_host_keys(str(keys), "i-0123456789abcdef0", ["ssh-ed25519 AAAA"])

    assert sorted(p.name for p in keys.iterdir()) == ["i-0123456789abcdef0.keys"]


def test_a_claimed_member_the_keeper_stopped_meanwhile_is_started(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Callable[[str], InstanceSpawner],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keeper read the member as unclaimed, then the hub claimed it (as running),
    then the keeper's StopInstances landed: the spawn must start it, not wait for
    `running` until boot_timeout."""
    [member] = Keeper(ec2, spec, constant_target(1, "running")).round().launched
    alice = spawner_for("alice")
    alice.state_poll_interval, alice.boot_timeout = 0.01, 3.0
    from cloudjhub import pool_claims

    claim = pool_claims.claim_batch

    def claim_then_keeper_stops(*args: Any) -> list[Any]:
        [got] = claim(*args)
        assert isinstance(got, Instance) and got.state == "running"
        ec2.client.stop_instances(InstanceIds=[member])  # the keeper's late stop
        return [got]

    monkeypatch.setattr(pool_claims, "claim_batch", claim_then_keeper_stops)

    async def no_jupyter(inst: Instance, home: Any) -> str:
        return f"http://{inst.private_ip}:8888"

    monkeypatch.setattr(alice, "_start_jupyter", no_jupyter)

    asyncio.run(alice._start())

    [now] = ec2.describe([member])
    assert now.state == "running" and now.user == "alice" and POOL_TAG not in now.tags


def test_the_keeper_takes_its_host_key_source_from_the_trait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traitlets.config import Config

    from cloudjhub.hub.apply import apply
    from tests.unit.test_warm_pool_settings import settings

    c = Config()
    apply(c, settings(tmp_path, ssh_host_key_source="known_hosts", warm_pool_size=1), {})
    [keeper] = [s for s in c.JupyterHub.services if s["name"] == "cloudjhub-warm-pool"]
    command = keeper["command"]
    assert command[command.index("--host-key-source") + 1] == "known_hosts"


def keeper_cli(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key_source: str,
    *args: str,
) -> Any:
    """One round of `cloudjhub warm-pool --once ARGS` for `ec2`'s cluster (moto)."""
    import json

    from click.testing import CliRunner

    from cloudjhub.aws import client as ec2_module
    from cloudjhub.cli import main

    monkeypatch.setattr(ec2_module, "make_client", lambda *_args: ec2_client())
    config = {
        "CLUSTER_NAME": ec2.cluster,
        "REGION": "us-east-1",
        "WORKER_AMI": spec.image_id,
        "SUBNET_ID": spec.subnet_id,
        "WORKER_SECURITY_GROUPS": list(spec.security_group_ids),
        "KEY_NAME": spec.key_name,
        "SSH_HOST_KEY_SOURCE": key_source,
    }
    path = tmp_path / "server_config.json"
    path.write_text(json.dumps(config))
    command = ["warm-pool", "--once", "--server-config", str(path), *args]
    return CliRunner().invoke(main, command, catch_exceptions=False)


def test_keeper_records_no_keys_and_stops_at_once_with_known_hosts(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """server_config.json says console, the trait (--host-key-source) says known_hosts:
    the keeper does not wait for console keys before stopping a member."""
    keys = tmp_path / "keys"
    args = ["--size", "1", "--keys-dir", str(keys), "--host-key-source", "known_hosts"]

    for _ in range(2):  # launch, then stop
        result = keeper_cli(ec2, spec, tmp_path, monkeypatch, "console", *args)
        assert result.exit_code == 0, result.output

    [member] = members(ec2)
    assert member.state == "stopped"
    assert not keys.exists()
    assert os.listdir(tmp_path) == ["server_config.json"]
