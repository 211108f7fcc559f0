"""Issue 10: the keeper asks EC2 about a claimed worker's keys file once, then slowly.

A claimed worker leaves the keeper's listing but still runs, so its recorded keys stay
until EC2 reports it terminated. The keeper asks about it when it leaves the pool, and
afterwards only on the slow re-check (KEYS_RECHECK), not every round.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.aws.client import CloudError
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.keys import ensure_ed25519
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.remote import CONSOLE_BEGIN, CONSOLE_END
from cloudjhub.warm_pool import KEYS_RECHECK, recorded_host_keys
from tests.unit.test_pool_races import claim


class Asked:
    """Ids asked about by id (DescribeInstances' `instance-id` filter), per call."""

    def __init__(self, ec2: LocalCloudEc2) -> None:
        self.calls: list[set[str]] = []
        ec2.client.meta.events.register("provide-client-params.ec2.DescribeInstances", self._see)

    def _see(self, params: dict[str, Any], **_: Any) -> None:
        for f in params.get("Filters", []):
            if f["Name"] == "instance-id":
                self.calls.append(set(f["Values"]))

    def about(self, ids: set[str]) -> list[set[str]]:
        """The calls since the last `about` that named any of `ids`, each cut to those."""
        seen, self.calls = self.calls, []
        return [c & ids for c in seen if c & ids]


@pytest.fixture
def pool(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Keeper, list[float], str]:
    """A running pool of 3 members with their keys recorded, on a clock the test moves."""
    keys_dir = str(tmp_path / "pool-host-keys")
    now = [time.time()]
    keeper = Keeper(ec2, spec, constant_target(3, "running"), lambda: now[0], keys_dir)
    host_key = ensure_ed25519(tmp_path / "host_key", "")
    console = f"{CONSOLE_BEGIN}\n{host_key}\n{CONSOLE_END}\n"
    monkeypatch.setattr(ec2, "console_output", lambda *_: console)
    keeper.round()
    keeper.round()
    return keeper, now, keys_dir


def _claim(ec2: LocalCloudEc2, spec: WorkerSpec, user: str) -> str:
    got = claim(ec2, user, "7", spec.instance_type)
    assert got is not None
    return got.id


def test_claimed_workers_are_asked_about_once_then_not_every_round(
    ec2: LocalCloudEc2, spec: WorkerSpec, pool: tuple[Keeper, list[float], str]
) -> None:
    keeper, now, keys_dir = pool
    first = _claim(ec2, spec, "ann")
    asked = Asked(ec2)
    keeper.round()  # `first` just left the listing: asked about, settled
    assert asked.about({first}) == [{first}]
    now[0] += 10
    keeper.round()  # (records the keys of the member launched in its place)
    assert asked.about({first}) == []

    second = _claim(ec2, spec, "bob")  # claimed between rounds
    asked.calls.clear()  # (the claim's own reads)
    now[0] += 10
    keeper.round()
    assert asked.about({first, second}) == [{second}]  # only the new one

    now[0] += 10
    keeper.round()
    assert asked.about({first, second}) == []  # nothing new: nothing asked about them
    assert recorded_host_keys(keys_dir, first) and recorded_host_keys(keys_dir, second)


def test_a_claimed_worker_terminated_later_loses_its_keys_on_the_slow_recheck(
    ec2: LocalCloudEc2, spec: WorkerSpec, pool: tuple[Keeper, list[float], str]
) -> None:
    keeper, now, keys_dir = pool
    gone, running = _claim(ec2, spec, "ann"), _claim(ec2, spec, "bob")
    keeper.round()  # both settled
    asked = Asked(ec2)
    ec2.client.terminate_instances(InstanceIds=[gone])
    now[0] += KEYS_RECHECK / 2
    keeper.round()
    assert asked.about({gone, running}) == []  # not due yet
    assert recorded_host_keys(keys_dir, gone)

    now[0] += KEYS_RECHECK / 2
    keeper.round()

    assert asked.about({gone, running}) == [{gone, running}]  # one call for all settled
    assert recorded_host_keys(keys_dir, gone) == []
    assert recorded_host_keys(keys_dir, running)


def test_a_restarted_keeper_checks_every_recorded_worker_once(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    pool: tuple[Keeper, list[float], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keeper, _now, keys_dir = pool
    gone = _claim(ec2, spec, "ann")
    keeper.round()
    ec2.client.terminate_instances(InstanceIds=[gone])
    describe = type(ec2).describe
    asked = Asked(ec2)

    def broken(ids: Any) -> Any:
        if gone in ids:
            raise CloudError("Request limit exceeded.", "RequestLimitExceeded")
        return describe(ec2, ids)

    restarted = Keeper(ec2, spec, keeper.target, keeper.clock, keys_dir)
    monkeypatch.setattr(ec2, "describe", broken)
    restarted.round()  # EC2 cannot answer: its keys stay
    assert recorded_host_keys(keys_dir, gone)
    monkeypatch.setattr(ec2, "describe", describe.__get__(ec2))

    restarted.round()  # nothing settled yet: asked at once, not after KEYS_RECHECK

    assert asked.about({gone}) == [{gone}]
    assert recorded_host_keys(keys_dir, gone) == []


def test_a_worker_given_back_and_claimed_again_is_asked_about_again(
    ec2: LocalCloudEc2, spec: WorkerSpec, pool: tuple[Keeper, list[float], str]
) -> None:
    """Settled, then back in the pool (pool_giveback), then another user's: it just
    left the listing again, so the keeper asks at once, not after KEYS_RECHECK."""
    keeper, now, keys_dir = pool
    worker = _claim(ec2, spec, "ann")
    keeper.round()
    [mine] = ec2.describe([worker])
    ec2.release_claim(mine, "ann", "7")
    keeper.target = constant_target(4, "running")  # (it is not retired as one too many)
    now[0] += 10
    keeper.round()  # listed again: a member
    got = claim(ec2, "bob", "8", spec.instance_type, ec2.describe([worker]))
    assert got is not None and got.id == worker
    ec2.client.terminate_instances(InstanceIds=[worker])
    asked = Asked(ec2)
    now[0] += 10

    keeper.round()

    assert asked.about({worker}) == [{worker}]
    assert recorded_host_keys(keys_dir, worker) == []


def test_a_member_untagged_by_hand_is_settled_too(
    ec2: LocalCloudEc2, spec: WorkerSpec, pool: tuple[Keeper, list[float], str]
) -> None:
    """Someone took the pool tag off a member (left alone, issue 10): it runs, so its
    keys stay; it is asked about once, not every round."""
    keeper, now, keys_dir = pool
    [member] = [p.stem for p in Path(keys_dir).glob("i-*.keys")][:1]
    ec2.client.delete_tags(Resources=[member], Tags=[{"Key": "cloudjhub:pool"}])
    asked = Asked(ec2)
    for _ in range(3):
        now[0] += 10
        keeper.round()
    assert asked.about({member}) == [{member}]
    assert recorded_host_keys(keys_dir, member)


def test_a_clock_set_back_still_rechecks(
    ec2: LocalCloudEc2, spec: WorkerSpec, pool: tuple[Keeper, list[float], str]
) -> None:
    keeper, now, keys_dir = pool
    gone = _claim(ec2, spec, "ann")
    keeper.round()  # settled
    ec2.client.terminate_instances(InstanceIds=[gone])
    now[0] -= 3 * KEYS_RECHECK  # the wall clock stepped back
    keeper.round()
    assert recorded_host_keys(keys_dir, gone) == []
