"""The hub and the pool's keeper spend one copy of the account's buckets: two pacers
(two processes) sharing a BucketFile stay within one bucket's rate, and the keeper's
`--buckets-file` round leaves levels the hub's pacer then waits on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.aws.pacing import BucketFile, Pacer
from tests.unit.test_pool_claims import Spawners, spawner_for  # noqa: F401 - a fixture
from tests.unit.test_warm_pool_keeper import keeper_cli

CAPACITY, REFILL = 5.0, 10.0


def test_two_pacers_sharing_a_file_spend_one_bucket(tmp_path: Path) -> None:
    """The hub's pacer and the keeper's, taking turns at 40 CreateTags: the calls they
    let go by any time t are at most what one bucket allows, capacity + refill * t."""
    now = [100.0]
    shared = BucketFile(tmp_path / "ec2-buckets.json")
    sizes = {"CreateTags": (CAPACITY, REFILL)}
    hub, keeper = (
        Pacer(sizes, clock=lambda: now[0], shared=shared, reserve_fraction=0) for _ in range(2)
    )

    ready = []
    for k in range(40):
        ready.append((hub if k % 2 else keeper).reserve("CreateTags").ready_at)
        now[0] += 0.001

    for n, at in enumerate(sorted(ready), 1):
        assert n <= CAPACITY + REFILL * (at - 100.0) + 1e-6, (n, at)
    # And no slower than that: the last goes when one bucket would let it.
    assert max(ready) - 100.0 < (40 - CAPACITY) / REFILL + 0.1


def test_a_torn_or_foreign_file_reads_as_full_buckets(tmp_path: Path) -> None:
    path = tmp_path / "ec2-buckets.json"
    for text in ("{", "[1, 2]", json.dumps({"CreateTags": ["x", 1]})):
        path.write_text(text)
        ticket = Pacer({"CreateTags": (1.0, 1.0)}, shared=BucketFile(path)).reserve("CreateTags")
        assert ticket.ready_at <= Pacer().clock()
    fresh = tmp_path / "new.json"
    Pacer(shared=BucketFile(fresh)).reserve("CreateTags")
    assert fresh.stat().st_mode & 0o777 == 0o600  # the hub's and its services' alone


def test_the_hub_waits_on_the_tokens_the_keepers_round_spent(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    spawner_for: Spawners,  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`cloudjhub warm-pool --once --buckets-file F` launches the pool (RunInstances);
    the hub's spawner, given the same file (ec2_buckets_file), finds RunInstances'
    bucket spent and would wait for its refill, not launch at once from a full copy."""
    shared = tmp_path / "ec2-buckets.json"
    slow = json.dumps({"RunInstances": [1, 0.01]})
    result: Any = keeper_cli(
        ec2, spec, tmp_path, monkeypatch, "known_hosts",
        "--size", "1", "--ec2-request-buckets", slow, "--buckets-file", str(shared),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RunInstances" in json.loads(shared.read_text())["levels"]

    spawner = spawner_for("ann", ec2_request_buckets=json.loads(slow), ec2_buckets_file=str(shared))

    async def hubs_wait() -> float:
        pacer = spawner.ec2_queue.pacer
        assert pacer is not None
        ticket = pacer.reserve("RunInstances", 1)  # what the EC2 queue does first
        return ticket.ready_at - pacer.clock()

    assert asyncio.run(hubs_wait()) > 50  # ~100 s at 0.01 a second


def test_the_hubs_config_gives_the_hub_and_its_keeper_one_file(tmp_path: Path) -> None:
    """Through the hub's config: the spawner's ec2_buckets_file is the file the keeper
    service is started with, unless the admin set one (then that one for both)."""
    from traitlets.config import Config

    from cloudjhub.hub.apply import apply
    from tests.unit.test_warm_pool_settings import settings

    for traits, want in (
        ({}, tmp_path / "ec2-buckets.json"),
        ({"ec2_buckets_file": str(tmp_path / "mine.json")}, tmp_path / "mine.json"),
    ):
        c = Config()
        apply(c, settings(tmp_path, **traits), {})
        [keeper] = [s for s in c.JupyterHub.services if s["name"] == "cloudjhub-warm-pool"]
        command = keeper["command"]
        assert command[command.index("--buckets-file") + 1] == str(want)
        assert c.InstanceSpawner.ec2_buckets_file == str(want)
