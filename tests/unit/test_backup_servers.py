"""Named servers' own backups: `backups`, `restore` and `resize-home --server NAME`, and
the hub's restore at a named server's start."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner

from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.home_volumes import attach_home_volume
from cloudjhub.local.dlm import DlmApi
from cloudjhub.spawner_options import SpawnError
from cloudjhub.tags import RESTORE_TAG, SERVER_TAG
from tests.unit import test_backups
from tests.unit.conftest import REGION
from tests.unit.test_backups import _bad, _snapshot, _tags
from tests.unit.test_bad_input import AwsCalls

writes = test_backups.writes  # the fixture: every AWS call the CLI makes


@pytest.fixture
def homes(ec2: LocalCloudEc2, local_dlm: tuple[DlmApi, str]) -> dict[str, str]:
    """alice's default home (2 GB) and her named server 'lab''s (3 GB)."""
    zone = f"{REGION}a"
    return {
        "": ec2.create_home_volume("alice", 2, zone, "alice-id"),
        "lab": ec2.create_home_volume("alice", 3, zone, "alice-id", None, "lab"),
    }


def _listed(*argv: str) -> list[str]:
    done = CliRunner().invoke(main, ["backups", "alpha", "alice", "--json", *argv])
    assert done.exit_code == 0, done.output
    return [r["snapshot_id"] for r in json.loads(done.output)]


def test_each_server_has_its_own_backups_restores_and_size(
    ec2: LocalCloudEc2, homes: dict[str, str], writes: AwsCalls
) -> None:
    default, lab = _snapshot(ec2, homes[""]), _snapshot(ec2, homes["lab"])
    assert _listed() == [default]
    assert _listed("--server", "lab") == [lab]

    _bad(["restore", "alpha", "alice", lab], writes, f"SNAPSHOT {lab}", "named server 'lab'")
    _bad(["restore", "alpha", "alice", default, "--server", "lab"], writes, "default server")
    _bad(["backups", "alpha", "alice", "--server", "../x"], writes, "--server", "'../x'")
    _bad(["resize-home", "alpha", "alice", "9", "--server", "a b"], writes, "--server")
    _bad(["resize-home", "alpha", "alice", "9", "--server", "none"], writes, "named server 'none'")
    assert RESTORE_TAG not in _tags(ec2, homes[""]) | _tags(ec2, homes["lab"])

    done = CliRunner().invoke(main, ["restore", "alpha", "alice", lab, "--server", "lab"])
    assert done.exit_code == 0, done.output
    assert _tags(ec2, homes["lab"])[RESTORE_TAG] == f"{lab} volume"
    assert RESTORE_TAG not in _tags(ec2, homes[""])

    grown = CliRunner().invoke(main, ["resize-home", "alpha", "alice", "3", "--server", "lab"])
    assert grown.exit_code == 2  # lab's is 3 GB already: its own size is the one compared
    grown = CliRunner().invoke(main, ["resize-home", "alpha", "alice", "5", "--server", "lab"])
    assert grown.exit_code == 0, grown.output
    sizes = {
        k: ec2.client.describe_volumes(VolumeIds=[v])["Volumes"][0]["Size"]
        for k, v in homes.items()
    }
    assert sizes == {"": 2, "lab": 5}


def _start(ec2: LocalCloudEc2, instance: Any, server: str) -> Any:
    return asyncio.run(
        attach_home_volume(
            ec2, "alice", "alice-id", 2, instance, lambda *_: None, 0.01, 10, server=server
        )
    )


def test_a_named_servers_start_restores_only_its_own_backup(
    ec2: LocalCloudEc2, homes: dict[str, str], make_worker: Any
) -> None:
    default, lab = _snapshot(ec2, homes[""]), _snapshot(ec2, homes["lab"])
    worker = make_worker("alice")
    # Tagged by hand with the default server's backup: refused at the start.
    ec2.client.create_tags(
        Resources=[homes["lab"]], Tags=[{"Key": RESTORE_TAG, "Value": f"{default} volume"}]
    )
    with pytest.raises(SpawnError, match="default server, not of named server 'lab'"):
        _start(ec2, worker, "lab")

    ec2.client.create_tags(
        Resources=[homes["lab"]], Tags=[{"Key": RESTORE_TAG, "Value": f"{lab} volume"}]
    )
    home, _ = _start(ec2, worker, "lab")
    assert home.volume_id != homes["lab"] and home.from_snapshot == lab
    assert _tags(ec2, home.volume_id)[SERVER_TAG] == "lab"
    assert ec2.find_home_volume("alice", "lab")["VolumeId"] == home.volume_id
    assert ec2.find_home_volume("alice")["VolumeId"] == homes[""]
