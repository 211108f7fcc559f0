"""Spawns waiting for a state share one DescribeInstances per interval, naming only the
instances they wait for; the whole cluster is listed at the fleet's own max_age."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from jupyterhub.objects import Hub

from cloudjhub.aws.client import Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.fleet import Fleet
from cloudjhub.spawner import InstanceSpawner, SpawnError
from tests.helpers import ApiCalls
from tests.unit.conftest import CLUSTER, REGION

MakeWorker = Callable[..., Instance]
INTERVAL = 0.25
WAITERS = 5
UNKNOWN = "i-0123456789abcdef0"  # an id EC2 does not know (yet)
SERVER_CONFIG = {
    "CLUSTER_NAME": CLUSTER,
    "REGION": REGION,
    "WORKER_AMI": "ami-0123abcd",
    "SUBNET_ID": "subnet-0abc12",
    "WORKER_SECURITY_GROUPS": ["sg-1"],
    "KEY_NAME": "k",
}


@pytest.fixture
def describes(alpha_client: Any) -> list[dict[str, Any]]:
    """The parameters of every DescribeInstances through the `ec2` fixture's client."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params))

    alpha_client.meta.events.register("provide-client-params.ec2.DescribeInstances", record)
    return seen


@pytest.fixture
def fleet(ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """The hub's shared fleet for these spawners, over the counted `ec2` fixture; its
    whole-cluster listing is good for an hour."""
    made = Fleet(ec2, max_age=3600)
    monkeypatch.setitem(Fleet._shared, (CLUSTER, REGION, ""), made)
    yield made


def spawner(tmp_path: Path, name: str) -> InstanceSpawner:
    path = tmp_path / "server_config.json"
    path.write_text(json.dumps(SERVER_CONFIG))
    user = SimpleNamespace(name=name, escaped_name=name, url=f"/user/{name}/")
    return InstanceSpawner(
        server_config_file=str(path),
        user=user,
        hub=Hub(),
        oauth_client_id="c",
        kept_logs_dir=str(tmp_path / "kept-logs"),
        aws_endpoint_url="",
        state_poll_interval=INTERVAL,
        boot_timeout=8 * INTERVAL,
    )


def named_ids(params: dict[str, Any]) -> set[str] | None:
    """The ids a DescribeInstances names (by filter or InstanceIds), None: a listing."""
    ids = set(params.get("InstanceIds", []))
    for f in params.get("Filters", []):
        if f["Name"] == "instance-id":
            ids |= set(f["Values"])
    return ids or None


async def test_waiting_spawns_share_one_describe_of_their_ids_per_interval(
    tmp_path: Path,
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    make_worker: MakeWorker,
    fleet: Fleet,
    calls: ApiCalls,
    describes: list[dict[str, Any]],
) -> None:
    waited = [make_worker(f"wait{i}") for i in range(WAITERS)]
    for i in range(15):  # the rest of the cluster, nobody waits on them
        make_worker(f"idle{i:02d}")
    ids = [w.id for w in waited]
    other_ec2.client.stop_instances(InstanceIds=ids)  # (not through the counted client)
    await fleet.refresh()
    calls.clear()
    describes.clear()

    async def start_later() -> float:
        await asyncio.sleep(3 * INTERVAL)
        await asyncio.to_thread(other_ec2.client.start_instances, InstanceIds=ids)
        return time.monotonic()

    began = time.monotonic()
    spawners = [spawner(tmp_path, f"wait{i}") for i in range(WAITERS)]
    starter = asyncio.ensure_future(start_later())
    got = await asyncio.gather(
        *(s._wait_for(i, ("running",)) for s, i in zip(spawners, ids, strict=True))
    )
    elapsed = time.monotonic() - began
    assert [g.state for g in got] == ["running"] * WAITERS
    assert await starter - began >= 3 * INTERVAL
    # One call per interval for all of them (not one per waiter), naming only their ids.
    assert 3 <= calls["DescribeInstances"] <= elapsed / INTERVAL + 1
    assert all(named_ids(p) == set(ids) for p in describes), describes
    assert all("InstanceIds" not in p for p in describes)  # a filter: see the next test
    assert sum(calls.values()) == calls["DescribeInstances"]


async def test_an_id_ec2_does_not_know_does_not_fail_the_others_wait(
    tmp_path: Path,
    make_worker: MakeWorker,
    fleet: Fleet,
    calls: ApiCalls,
    describes: list[dict[str, Any]],
) -> None:
    """InstanceIds with one unknown id fails the whole call (InvalidInstanceID.NotFound);
    the watch set's filter just leaves it out, and only its own wait times out."""
    known = [make_worker(f"user{i}") for i in range(2)]
    with pytest.raises(ClientError, match=r"InvalidInstanceID\.NotFound"):  # moto as AWS
        fleet.ec2.client.describe_instances(InstanceIds=[known[0].id, UNKNOWN])
    await fleet.refresh()
    calls.clear()
    describes.clear()
    waits = [
        spawner(tmp_path, f"user{i}")._wait_for(w.id, ("running",)) for i, w in enumerate(known)
    ]
    lost = spawner(tmp_path, "lost")._wait_for(UNKNOWN, ("running",))
    *got, failed = await asyncio.gather(*waits, lost, return_exceptions=True)
    assert [g.id for g in got] == [w.id for w in known]  # type: ignore[union-attr]
    assert isinstance(failed, SpawnError) and "still 'unknown'" in str(failed)
    assert describes and all(UNKNOWN in (named_ids(p) or ()) for p in describes)
    # No whole-cluster listing while the fleet's own is younger than its max_age.
    assert all(named_ids(p) is not None for p in describes)
    assert fleet._watched == {}  # every waiter left the watch set


async def test_a_cancelled_wait_leaves_the_watch_set_and_the_others_keep_waiting(
    tmp_path: Path,
    other_ec2: LocalCloudEc2,
    make_worker: MakeWorker,
    fleet: Fleet,
    describes: list[dict[str, Any]],
) -> None:
    """Review 7 L6: a spawn cancelled while it waits (the user gave up) stops being read;
    the shared read it was part of is not cancelled for the others."""
    gone, stays = make_worker("gaveup"), make_worker("patient")
    other_ec2.client.stop_instances(InstanceIds=[gone.id, stays.id])
    await fleet.refresh()
    cancelled = asyncio.ensure_future(spawner(tmp_path, "gaveup")._wait_for(gone.id, ("running",)))
    waiting = asyncio.ensure_future(spawner(tmp_path, "patient")._wait_for(stays.id, ("running",)))
    await asyncio.sleep(2 * INTERVAL)
    assert set(fleet._watched) == {gone.id, stays.id}
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert set(fleet._watched) == {stays.id}
    describes.clear()
    await asyncio.to_thread(other_ec2.client.start_instances, InstanceIds=[stays.id])
    assert (await waiting).state == "running"
    assert describes and all(named_ids(p) == {stays.id} for p in describes)
    assert fleet._watched == {}
