"""`cloudjhub terminate-workers` and its shim, scripts/terminate_all_workers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudjhub.cli import main
from cloudjhub.commands import cloud_options
from tests.unit.lifecycle.conftest import (
    ROOT,
    SHIM,
    CliCloud,
    World,
    inventory,
    listed_ids,
    run,
    without,
)

# ---- terminate-workers --------------------------------------------------------------


def test_terminate_workers_terminates_only_the_clusters_workers(
    world: World, cli_cloud: CliCloud
) -> None:
    client, alpha = world.ec2.client, world.alpha
    before = inventory(client)

    result = run("terminate-workers", "alpha", "--yes")

    assert result.exit_code == 0, result.output
    after = inventory(client)
    for user, instance_id in alpha.workers.items():
        assert user in result.output and instance_id in result.output
        assert after["instances"][instance_id] == "terminated"
    # One TerminateInstances, naming exactly alpha's workers.
    [body] = cli_cloud.named("TerminateInstances")
    assert listed_ids(body, "InstanceId") == set(alpha.workers.values())
    assert "instance(s) to terminate" in result.output  # the progress line
    # Home volumes are kept: alice's is detached now, dave's untouched.
    assert after["volumes"][alpha.homes["alice"]] == ("available", ())
    assert after["volumes"][alpha.homes["dave"]] == ("available", ())
    assert "kept: 2 home volume(s)" in result.output
    # Nothing else changed: alpha's manager, groups, image, and every foreign resource.
    changed = alpha.worker_ids(homes=True)
    assert without(after, changed) == without(before, changed)
    assert after["instances"][alpha.manager] == "running"


def test_terminate_workers_can_delete_home_volumes_after_detaching(
    world: World, cli_cloud: CliCloud
) -> None:
    client, alpha = world.ec2.client, world.alpha
    before = inventory(client)

    result = run("terminate-workers", "alpha", "--yes", "--delete-home-volumes")

    assert result.exit_code == 0, result.output
    after = inventory(client)
    for volume_id in alpha.homes.values():
        assert volume_id in result.output
        assert volume_id not in after["volumes"]
    assert "home volume(s) to be detached" in result.output
    # The volumes were deleted after the instances were terminated.
    ops = cli_cloud.mutations()
    assert ops.index("TerminateInstances") < ops.index("DeleteVolume")
    assert len(cli_cloud.named("DeleteVolume")) == 2
    changed = alpha.worker_ids(homes=True)
    assert without(after, changed) == without(before, changed)
    assert world.beta.homes["alice"] in after["volumes"]


def test_terminate_workers_dry_run_lists_and_changes_nothing(
    world: World, cli_cloud: CliCloud
) -> None:
    before = inventory(world.ec2.client)

    result = run("terminate-workers", "alpha", "--dry-run", "--delete-home-volumes")

    assert result.exit_code == 0, result.output
    for user, instance_id in world.alpha.workers.items():
        line = next(line for line in result.output.splitlines() if instance_id in line)
        assert user in line
    assert "stopped" in result.output and "running" in result.output
    assert world.alpha.homes["dave"] in result.output
    assert world.alpha.manager not in result.output
    assert cli_cloud.mutations() == []
    assert inventory(world.ec2.client) == before


def test_terminate_workers_refuses_without_a_terminal_or_yes(
    world: World, cli_cloud: CliCloud
) -> None:
    before = inventory(world.ec2.client)

    result = run("terminate-workers", "alpha", input="y\n")

    assert result.exit_code == 1
    assert "stdin is not a terminal" in result.output and "--yes" in result.output
    assert cli_cloud.mutations() == []
    assert inventory(world.ec2.client) == before


def test_terminate_workers_asks_a_person(
    world: World, cli_cloud: CliCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_options, "stdin_is_tty", lambda: True)
    before = inventory(world.ec2.client)

    declined = run("terminate-workers", "alpha", input="n\n")

    assert declined.exit_code == 1
    assert "Terminate 3 worker(s) of cluster alpha?" in declined.output
    assert inventory(world.ec2.client) == before

    accepted = run("terminate-workers", "alpha", input="y\n")

    assert accepted.exit_code == 0, accepted.output
    states = inventory(world.ec2.client)["instances"]
    assert {states[i] for i in world.alpha.workers.values()} == {"terminated"}


def test_terminate_workers_with_no_workers_says_so(world: World, cli_cloud: CliCloud) -> None:
    before = inventory(world.ec2.client)

    result = run("terminate-workers", "gamma")
    again = run("terminate-workers", "alpha", "--yes")
    twice = run("terminate-workers", "alpha", "--yes")

    assert result.exit_code == 0 and "no workers in cluster gamma" in result.output
    assert again.exit_code == 0
    assert twice.exit_code == 0 and "no workers in cluster alpha" in twice.output
    assert len(cli_cloud.named("TerminateInstances")) == 1
    changed = world.alpha.worker_ids(homes=True)
    assert without(inventory(world.ec2.client), changed) == without(before, changed)


def test_terminate_workers_rejects_a_bad_cluster_name(cli_cloud: CliCloud) -> None:
    result = CliRunner().invoke(main, ["terminate-workers", "Alpha!"])

    assert result.exit_code == 2
    assert "Invalid value for 'CLUSTER'" in result.output
    assert cli_cloud.connects == []


# ---- the shim -------------------------------------------------------------------------


def test_shim_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed; scripts/bootstrap installs it"
    done = subprocess.run([shellcheck, str(SHIM)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_shim_runs_terminate_workers_from_the_checkouts_venv() -> None:
    helped = subprocess.run(
        [str(SHIM), "--help"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    bad = subprocess.run(
        [str(SHIM), "Not A Cluster"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )

    assert helped.returncode == 0, helped.stderr
    assert "Usage: cloudjhub terminate-workers" in helped.stdout
    assert "--delete-home-volumes" in helped.stdout
    assert bad.returncode == 2  # the argument reached terminate-workers' validation
    assert "cluster name 'Not A Cluster'" in bad.stderr


def test_shim_falls_back_to_an_installed_cloudjhub(tmp_path: Path) -> None:
    copy = tmp_path / "scripts" / "terminate_all_workers"  # no .venv next to it
    copy.parent.mkdir()
    shutil.copy2(SHIM, copy)
    venv_bin = ROOT / ".venv" / "bin"

    installed = subprocess.run(
        [str(copy), "--help"],
        capture_output=True,
        text=True,
        env={"PATH": f"{venv_bin}:/usr/bin:/bin"},
    )
    missing = subprocess.run(
        [str(copy), "alpha"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )

    assert installed.returncode == 0, installed.stderr
    assert "Usage: cloudjhub terminate-workers" in installed.stdout
    assert missing.returncode == 127
    assert "cloudjhub is not installed" in missing.stderr
