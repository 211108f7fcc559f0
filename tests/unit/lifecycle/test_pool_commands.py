"""The warm pool in `cloudjhub status`, `terminate-workers`, `destroy` and `cost`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from tests.unit.conftest import Network
from tests.unit.lifecycle.conftest import CliCloud, World, inventory, listed_ids, run


@pytest.fixture
def pool(world: World, network: Network) -> list[Instance]:
    """Two unassigned pool workers of alpha: one running, one stopped."""
    alpha = world.alpha
    spec = WorkerSpec(
        alpha.image, "t3.medium", network.subnet_id, (alpha.groups.worker,), alpha.key_pair, 8
    )
    members = world.ec2.launch_pool_workers(spec, 2, f"t-{uuid.uuid4().hex}")
    world.ec2.stop(members[1].id)
    return members


def test_status_shows_the_pool(world: World, pool: list[Instance], cli_cloud: CliCloud) -> None:
    result = run("status", "alpha")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    pooled = [line for line in lines if line.startswith("(pool)")]
    assert len(pooled) == 2 and all(any(m.id in line for line in pooled) for m in pool)
    assert lines[-1] == "pool: 2 ready (1 running, 1 stopped)"

    data = json.loads(run("status", "alpha", "--json").output)
    assert data["pool"] == {"ready": 2, "states": {"running": 1, "stopped": 1}}
    rows = {r["instance_id"]: r for r in data["instances"]}
    assert rows[pool[0].id]["pool"] == "ready" and rows[pool[0].id]["user"] is None
    assert rows[world.alpha.workers["alice"]]["pool"] is None
    assert cli_cloud.mutations() == []


def test_terminate_workers_includes_the_pool(
    world: World, pool: list[Instance], cli_cloud: CliCloud
) -> None:
    dry = run("terminate-workers", "alpha", "--dry-run")
    assert [line for line in dry.output.splitlines() if "(pool)" in line] != []
    assert all(m.id in dry.output for m in pool)

    result = run("terminate-workers", "alpha", "--yes")

    assert result.exit_code == 0, result.output
    [body] = cli_cloud.named("TerminateInstances")
    assert {m.id for m in pool} <= listed_ids(body, "InstanceId")
    after = inventory(world.ec2.client)["instances"]
    assert {after[m.id] for m in pool} == {"terminated"}


def test_destroy_includes_the_pool(world: World, pool: list[Instance], cli_cloud: CliCloud) -> None:
    dry = run("destroy", "alpha", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert all(m.id in dry.output for m in pool) and "(pool)" in dry.output


def test_cost_counts_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped: its members' disks; running: compute too (prices as shipped)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLOUDJHUB_SERVER_CONFIG", raising=False)
    base = ["cost", "c1", "--usage-log", "none.jsonl", "--users", "10", "--json"]

    def estimate(*more: str) -> dict[str, float]:
        result = run(*base, *more)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["estimate"]  # type: ignore[no-any-return]

    none, stopped = estimate(), estimate("--warm-pool-size", "4")
    running = estimate("--warm-pool-size", "4", "--warm-pool-state", "running")
    disks = 4 * 8 * 0.08  # 8 GB root each, gp3 at $0.08/GB-month
    assert stopped["pool"] == pytest.approx(disks)
    assert stopped["total"] == pytest.approx(none["total"] + disks)
    assert running["pool"] == pytest.approx(disks + 4 * 0.0416 * 730)
    (Path(tmp_path) / "instance_config.json").write_text(json.dumps({"WARM_POOL_SIZE": 4}))
    assert estimate()["pool"] == pytest.approx(disks)  # the cluster's WARM_POOL_SIZE
    table = run(*base[:-1], "--warm-pool-size", "4")
    assert "warm pool: 4 x t3.medium, stopped" in table.output
    bad = run(*base, "--warm-pool-size", "-1")
    assert bad.exit_code == 2 and "--warm-pool-size" in bad.output
