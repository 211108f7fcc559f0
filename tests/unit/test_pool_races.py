"""The warm pool's races and leaks against moto: a claim whose tagging fails gives the
worker back, the keeper ends stale claim marks nobody holds, a claim landing between
the keeper's read and its act keeps its worker, the keeper batches its calls, and a
pool launch asks AWS for at least one rather than all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudjhub import warm_pool
from cloudjhub.aws import pacing
from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.pool_batch import Claimant, claim_batch
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.pool_schedule import PoolTarget
from cloudjhub.tags import POOL_CLAIMING, POOL_TAG, USER_ID_TAG, USER_TAG
from tests.unit.test_warm_pool import members, tags_of
from tests.unit.test_warm_pool_keeper import keeper_cli


def test_a_claim_whose_tagging_fails_gives_the_worker_back(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CreateTags landed but its reply was lost: that worker goes back to the pool
    (not left tagged `claiming` for alice while she gets another)."""
    first, second = sorted(Keeper(ec2, spec, constant_target(2, "running")).round().launched)
    tag_claim = ec2.tag_read_claim

    def lost_reply(instance: Instance, *args: Any) -> None:
        tag_claim(instance, *args)
        if instance.id == first:
            raise CloudError("read timeout", "RequestTimeout")

    monkeypatch.setattr(ec2, "tag_read_claim", lambda i, *a: lost_reply(i, *a))
    monkeypatch.setattr(warm_pool, "CLAIM_ORDER", {})  # any order: try `first` first
    monkeypatch.setattr(
        ec2, "pool_workers", lambda *a: sorted(type(ec2).pool_workers(ec2, *a), key=_id)
    )

    got = claim(ec2, "alice", "7", spec.instance_type)

    assert got is not None and got.id == second and got.user == "alice"
    [back] = ec2.describe([first])
    assert back.user is None and back.tags[POOL_TAG] == "ready"
    assert USER_ID_TAG not in back.tags and USER_TAG not in tags_of(ec2, back.volumes[0])
    assert [m.id for m in members(ec2)] == [first]  # claimable again


def claim(
    ec2: LocalCloudEc2, user: str, user_id: str, kind: str, cached: list[Instance] | None = None
) -> Instance | None:
    """One claim on its own: a batch of one."""
    [got] = claim_batch(ec2, [Claimant(user, user_id, kind)], cached or ())
    assert not isinstance(got, CloudError)
    return got


def _id(instance: Instance) -> str:
    return instance.id


def test_the_keeper_ends_stale_claim_marks_nobody_holds(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    """What a launch for several users left when its tagging failed half way: a claim
    mark and no user. Nobody's: terminated once stale, never before."""
    [left] = Keeper(ec2, spec, constant_target(1, "running")).round().launched
    ec2.client.create_tags(Resources=[left], Tags=[{"Key": POOL_TAG, "Value": POOL_CLAIMING}])
    [inst] = ec2.describe([left])
    now = [inst.launched_at + 60]
    pool = Keeper(ec2, spec, constant_target(0, "running"), clock=lambda: now[0])

    assert pool.round().ended == []  # a launch still tagging its users
    now[0] += warm_pool.STALE_CLAIM
    assert pool.round().ended == [left]
    assert [i.state for i in ec2.describe([left])] in (["shutting-down"], ["terminated"])


def test_a_claim_landing_between_the_keepers_read_and_its_act_keeps_its_worker(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool shrinks; the keeper reads the member as unclaimed, and the hub's claim
    tags it right after that read. The member stays alice's through later rounds."""
    size = [1]
    pool = Keeper(ec2, spec, lambda _now: PoolTarget(size[0], "running"))
    [member] = pool.round().launched
    describe = type(ec2).describe
    claimed: list[Instance] = []

    def read_then_claim(ids: Any) -> list[Instance]:
        found = describe(ec2, ids)
        if not claimed and list(ids) == [member]:  # the keeper's fresh read
            claimed.append(found[0])
            got = claim(ec2, "alice", "7", spec.instance_type)
            assert got is not None and got.id == member
        return found

    monkeypatch.setattr(ec2, "describe", read_then_claim)
    size[0] = 0
    pool.round()
    monkeypatch.undo()
    for _ in range(2):
        pool.round()

    assert claimed
    [now] = ec2.describe([member])
    assert now.live and now.user == "alice" and POOL_TAG not in now.tags


def test_the_keeper_acts_on_all_members_in_one_call_each(
    ec2: LocalCloudEc2, spec: WorkerSpec, calls: Any
) -> None:
    size = [4]
    pool = Keeper(ec2, spec, lambda _now: PoolTarget(size[0], "stopped"))
    launched = pool.round().launched
    calls.clear()

    assert sorted(pool.round().stopped) == sorted(launched)
    assert calls["StopInstances"] == 1 and calls["DescribeInstances"] <= 3

    size[0] = 0
    assert sorted(pool.round().terminated) == sorted(launched)
    assert sorted(pool.round().ended) == sorted(launched)
    assert calls["TerminateInstances"] == 1 and calls["CreateTags"] == 1


def test_a_pool_launch_asks_for_at_least_one_not_all(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    """MinCount=MaxCount fails the whole call when AWS is short of capacity; MinCount 1
    gets what there is, and the next round tops up. (The local cloud, like AWS with
    capacity, launches MaxCount.)"""
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params.get("body") or {}))

    ec2.client.meta.events.register("before-call.ec2.RunInstances", record)
    launched = Keeper(ec2, spec, constant_target(3, "running")).round().launched

    assert [(b["MinCount"], b["MaxCount"]) for b in sent] == [(1, 3)]
    assert len(launched) == 3


def run_keeper(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *more: str,
) -> Any:
    return keeper_cli(ec2, spec, tmp_path, monkeypatch, "known_hosts", "--size", "2", *more)


def test_the_keeper_service_spends_awss_buckets_at_the_configured_pace(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cloudjhub warm-pool` paces its client with the hub's buckets (a small
    non-mutating bucket here: every describe after the first waits its refill)."""
    waits: list[float] = []
    real = pacing.Pacer.__init__

    def recording(self: pacing.Pacer, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        self.sleep = waits.append

    monkeypatch.setattr(pacing.Pacer, "__init__", recording)
    buckets = json.dumps({"non-mutating": [1, 0.01]})

    result = run_keeper(ec2, spec, tmp_path, monkeypatch, "--ec2-request-buckets", buckets)

    assert result.exit_code == 0, result.output
    assert len(members(ec2)) == 2
    assert waits and min(waits) > 50  # after the first, each waits ~100 s (1 token, 0.01/s)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ('{"nope": [1, 2]}', "'nope': unknown family"),
        ('{"non-mutating": [0, 2]}', "'non-mutating'"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_keeper_buckets_are_one_line_and_change_nothing(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    said: str,
) -> None:
    result = run_keeper(ec2, spec, tmp_path, monkeypatch, "--ec2-request-buckets", value)

    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "--ec2-request-buckets" in line and said in line
    assert ec2.describe_workers() == []


def test_the_hub_gives_its_keeper_the_spawners_buckets(tmp_path: Path) -> None:
    from tests.unit.test_warm_pool_settings import services, settings

    buckets = {"non-mutating": [50, 10]}
    keeper = services(settings(tmp_path, warm_pool_size=1, ec2_request_buckets=buckets))
    command = keeper["cloudjhub-warm-pool"]["command"]
    assert json.loads(command[command.index("--ec2-request-buckets") + 1]) == buckets


def test_claims_take_members_from_the_hubs_listing_not_a_new_one_each(
    ec2: LocalCloudEc2, spec: WorkerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storm's claims, one after another under the hub's lock, each listing every
    worker made each claim cost a full DescribeInstances (seconds with hundreds). The
    hub's cached listing (even one not updated since) is used, each member re-read."""
    Keeper(ec2, spec, constant_target(3, "running")).round()
    cached = ec2.describe_workers()  # the hub's listing, not updated by the claims
    listings: list[int] = []
    pool_workers = ec2.pool_workers

    def counted(*args: Any) -> list[Instance]:
        listings.append(1)
        return pool_workers(*args)

    monkeypatch.setattr(ec2, "pool_workers", counted)

    got = [claim(ec2, u, str(n), spec.instance_type, cached) for n, u in
           enumerate(["ann", "bob", "cy"])]  # fmt: skip

    assert len({g.id for g in got if g is not None}) == 3
    assert listings == []
    assert claim(ec2, "dan", "9", spec.instance_type, cached) is None
    assert listings == [1]  # the cache had nothing left: one fresh listing
