"""Issue 10: a claim hands out only a pool member whose host keys the keeper recorded.

cloud-init prints a worker's host keys on its first boot only. A running member
whose console shows none (it booted already, or its keys were lost) can never be
verified: handed out, its user's spawn waited 300 s for keys and failed. The keeper
records running members' keys each round, and a claim skips members without.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.storm import ready_members
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.keys import ensure_ed25519
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.remote import CONSOLE_BEGIN, CONSOLE_END
from cloudjhub.warm_pool import recorded_host_keys
from tests.unit.test_pool_claims import Spawners, find_all, spawner_for  # noqa: F401


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
    assert ready_members(ec2.client, Path(keys_dir)) == [printed]

    traits: dict[str, Any] = {"ssh_host_key_source": "console", "warm_pool_keys_dir": keys_dir}
    spawners = [spawner_for(user, **traits) for user in ("ann", "bob")]
    found = find_all(spawners)

    claimed = [f.id for f in found if f is not None]
    assert claimed == [printed]  # the other user launches instead of taking `silent`
    [ann_or_bob] = [s for s, f in zip(spawners, found, strict=True) if f is not None]
    assert ann_or_bob.pinned_host_keys == recorded_host_keys(keys_dir, printed)
