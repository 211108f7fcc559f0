"""Issue 10: a claim hands out only a pool member whose host keys the keeper recorded.

cloud-init prints a worker's host keys on its first boot only. A running member
whose console shows none (it booted already, or its keys were lost) can never be
verified: handed out, its user's spawn waited 300 s for keys and failed. The keeper
records running members' keys each round, and a claim skips members without, also
before the keeper's first round; the keeper forgets keys only of terminated members.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.keys import ensure_ed25519
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.pool_schedule import PoolTarget
from cloudjhub.remote import CONSOLE_BEGIN, CONSOLE_END
from cloudjhub.warm_pool import KEYS_RECHECK, ready_members, recorded_host_keys
from tests.unit.test_pool_claims import Spawners, find_all, spawner_for  # noqa: F401
from tests.unit.test_pool_races import claim


def test_only_members_with_recorded_host_keys_are_claimed(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys_dir = str(tmp_path / "pool-host-keys")
    keeper = Keeper(ec2, spec, constant_target(2, "running"), keys_dir=keys_dir)
    printed, silent = sorted(keeper.round().launched)
    host_key = ensure_ed25519(tmp_path / "host_key", "")
    consoles = {
        printed: f"cloud-init: booting\n{CONSOLE_BEGIN}\n{host_key}\n{CONSOLE_END}\n",
        silent: "cloud-init: keys-to-console already ran on this instance\n",
    }

    def console_output(instance_id: str, instance_type: str) -> str:
        return consoles[instance_id]

    monkeypatch.setattr(ec2, "console_output", console_output)
    keeper.round()  # the pool is full; it records what running members printed

    assert recorded_host_keys(keys_dir, printed) == [" ".join(host_key.split()[:2])]
    assert recorded_host_keys(keys_dir, silent) == []
    # What benchmarks/storm.py waits for before the class: only `printed` is ready.
    assert ready_members(ec2.client, Path(keys_dir), ec2.cluster) == [printed]

    traits: dict[str, Any] = {"ssh_host_key_source": "console", "warm_pool_keys_dir": keys_dir}
    spawners = [spawner_for(user, **traits) for user in ("ann", "bob")]
    found = find_all(spawners)

    claimed = [f.id for f in found if f is not None]
    assert claimed == [printed]  # the other user launches instead of taking `silent`
    [ann_or_bob] = [s for s, f in zip(spawners, found, strict=True) if f is not None]
    assert ann_or_bob.pinned_host_keys == recorded_host_keys(keys_dir, printed)


def test_a_hub_up_before_the_keepers_first_round_hands_out_no_unrecorded_member(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Hosts pinned from the console, the keeper's keys directory not made yet: a
    member (here from a keeper that records nothing) is not handed out; ann launches."""
    Keeper(ec2, spec, constant_target(1, "running")).round()
    keys_dir = str(tmp_path / "pool-host-keys")
    traits: dict[str, Any] = {"ssh_host_key_source": "console", "warm_pool_keys_dir": keys_dir}

    assert find_all([spawner_for("ann", **traits)]) == [None]


def test_a_member_kept_for_a_claim_while_retiring_keeps_its_keys(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool shrinks, and alice's claim tags the member between the keeper's read
    and its retiring mark: the keeper keeps it for her (`_unmark`) and keeps its keys,
    which its console will not print again."""
    keys_dir = str(tmp_path / "pool-host-keys")
    size = [1]
    keeper = Keeper(ec2, spec, lambda _now: PoolTarget(size[0], "running"), keys_dir=keys_dir)
    [member] = keeper.round().launched
    host_key = ensure_ed25519(tmp_path / "host_key", "")
    console = f"{CONSOLE_BEGIN}\n{host_key}\n{CONSOLE_END}\n"
    monkeypatch.setattr(ec2, "console_output", lambda *_: console)
    keeper.round()
    recorded = recorded_host_keys(keys_dir, member)
    assert recorded
    describe = type(ec2).describe
    claimed: list[Instance] = []

    def read_then_claim(ids: Any) -> list[Instance]:
        found = describe(ec2, ids)
        if not claimed and list(ids) == [member]:  # the keeper's read before its mark
            claimed.append(found[0])
            got = claim(ec2, "alice", "7", spec.instance_type)
            assert got is not None and got.id == member
        return found

    monkeypatch.setattr(ec2, "describe", read_then_claim)
    size[0] = 0
    keeper.round()

    assert claimed
    [now] = describe(ec2, [member])
    assert now.live and now.user == "alice"
    assert recorded_host_keys(keys_dir, member) == recorded


def test_a_claimed_member_still_running_keeps_its_keys(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished claim drops the pool tag, so the keeper's listing no longer shows the
    worker; it still runs (and may be given back to the pool later), so its keys stay.
    Once it is terminated, the keeper's next re-check of claimed workers forgets them."""
    keys_dir = str(tmp_path / "pool-host-keys")
    now = [time.time()]
    keeper = Keeper(ec2, spec, constant_target(1, "running"), lambda: now[0], keys_dir)
    [member] = keeper.round().launched
    host_key = ensure_ed25519(tmp_path / "host_key", "")
    console = f"{CONSOLE_BEGIN}\n{host_key}\n{CONSOLE_END}\n"
    monkeypatch.setattr(ec2, "console_output", lambda *_: console)
    keeper.round()
    recorded = recorded_host_keys(keys_dir, member)
    assert recorded
    got = claim(ec2, "alice", "7", spec.instance_type)
    assert got is not None and got.id == member

    keeper.round()

    assert recorded_host_keys(keys_dir, member) == recorded
    ec2.client.terminate_instances(InstanceIds=[member])
    now[0] += KEYS_RECHECK
    keeper.round()
    assert recorded_host_keys(keys_dir, member) == []


def test_ready_members_counts_only_the_clusters_own(
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    spec: WorkerSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two clusters in one region, each with a ready member whose keys are recorded:
    benchmarks/storm.py, waiting for its demo's pool, counts only its cluster's."""
    keys_dir = str(tmp_path / "pool-host-keys")
    host_key = ensure_ed25519(tmp_path / "host_key", "")
    console = f"{CONSOLE_BEGIN}\n{host_key}\n{CONSOLE_END}\n"
    members = []
    for cloud in (ec2, other_ec2):
        monkeypatch.setattr(cloud, "console_output", lambda *_: console)
        keeper = Keeper(cloud, spec, constant_target(1, "running"), keys_dir=keys_dir)
        [member] = keeper.round().launched
        keeper.round()
        assert recorded_host_keys(keys_dir, member)
        members.append(member)

    assert ready_members(ec2.client, keys_dir, ec2.cluster) == members[:1]
    assert ready_members(ec2.client, keys_dir, other_ec2.cluster) == members[1:]
