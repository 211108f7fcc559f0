"""Backups: the DLM policy, the local cloud's DLM engine at an injected clock, and the
admin's `backups`, `restore`, `resize-home` and `destroy` through the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from cloudjhub.aws.backups import Backups, policy_details
from cloudjhub.aws.client import boto_client
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.backup_schedule import BadSchedule, to_dlm
from cloudjhub.cli import main
from cloudjhub.local.dlm import DlmApi, DlmEngine
from cloudjhub.tags import BACKUP_TAG, REPLACED_TAG, RESTORE_TAG, tag_dict
from tests.unit.conftest import REGION, ec2_client
from tests.unit.test_bad_input import AwsCalls


@pytest.mark.parametrize(
    ("given", "dlm"),
    [
        ("0 3 * * *", "cron(0 3 * * ? *)"),
        ("0 */6 * * *", "cron(0 0/6 * * ? *)"),
        ("30 1 * * 1-5", "cron(30 1 ? * MON,TUE,WED,THU,FRI *)"),
        ("0 0 * * 0", "cron(0 0 ? * SUN *)"),  # Unix 0 is Sunday, DLM's 1
        ("0 4 1 * *", "cron(0 4 1 * ? *)"),
        ("cron(15 2 ? * 2 *)", "cron(15 2 ? * MON *)"),
    ],
)
def test_unix_and_dlm_cron_become_dlms_form(given: str, dlm: str) -> None:
    assert to_dlm(given) == dlm


@pytest.mark.parametrize(
    "bad",
    [
        "* * * * *",
        "*/30 * * * *",
        "0 3 1 * 1",
        "0 3 * *",
        "0 25 * * *",
        "cron(0 3 * * * *)",
        "cron(0 3 ? * MON 2027)",
        "0 3 ? * *",
        "0 3 * * 5L",  # Unix cron's "last Friday": no DLM form here
        "0 3 * * 1#2",
    ],
)
def test_schedules_dlm_would_refuse_are_refused(bad: str) -> None:
    with pytest.raises(BadSchedule):
        to_dlm(bad)


@pytest.fixture
def dlm_url(aws: None, local_dlm: tuple[DlmApi, str]) -> tuple[DlmApi, str]:
    """The local cloud's DLM API (conftest: boto3 finds it via AWS_ENDPOINT_URL_DLM)."""
    return local_dlm


def _homes(ec2: LocalCloudEc2, *users: str, size: int = 2) -> dict[str, str]:
    return {u: ec2.create_home_volume(u, size, f"{REGION}a", f"{u}-id") for u in users}


def _engine() -> DlmEngine:
    return DlmEngine(boto_client("dlm", REGION), ec2_client())


def test_the_engine_snapshots_home_volumes_on_schedule_and_keeps_n(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, dlm_url: tuple[DlmApi, str]
) -> None:
    homes = _homes(ec2, "alice", "bob")
    other = _homes(other_ec2, "alice")["alice"]
    backups = Backups.connect(ec2, REGION, None)
    policy = backups.ensure_policy(
        "arn:aws:iam::123456789012:role/AWSDataLifecycleManagerDefaultRole",
        policy_details("alpha", True, to_dlm("0 * * * *"), 2),
    )
    assert backups.policies() == [policy]
    engine = _engine()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert engine.run(start - timedelta(minutes=30)) == []  # nothing due yet
    for hour in range(3):
        assert len(engine.run(start + timedelta(hours=hour, minutes=1))) == 2
    mine = backups.snapshots("alice")
    assert [s["VolumeId"] for s in mine] == [homes["alice"]] * 2  # 3 taken, 2 kept
    assert all(tag_dict(s["Tags"])["cloudjhub:user"] == "alice" for s in mine)
    assert [s["VolumeId"] for s in backups.snapshots("bob")] == [homes["bob"]] * 2
    assert Backups.connect(other_ec2, REGION, None).snapshots("alice") == []
    assert (
        tag_dict(ec2.client.describe_volumes(VolumeIds=[other])["Volumes"][0]["Tags"])[BACKUP_TAG]
        == "beta/home"
    )

    listed = CliRunner().invoke(main, ["backups", "alpha", "alice", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [r["snapshot_id"] for r in rows] == [s["SnapshotId"] for s in mine]
    assert {r["volume_id"] for r in rows} == {homes["alice"]}
    assert {r["size_gb"] for r in rows} == {2}


def _snapshot(ec2: LocalCloudEc2, volume_id: str) -> str:
    tags = ec2.client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Tags"]
    reply = ec2.client.create_snapshot(
        VolumeId=volume_id, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}]
    )
    return str(reply["SnapshotId"])


def _tags(ec2: LocalCloudEc2, volume_id: str) -> dict[str, str]:
    return tag_dict(ec2.client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Tags"])


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> AwsCalls:
    import botocore.client

    calls = AwsCalls()
    inner = botocore.client.BaseClient._make_api_call

    def record(self: Any, operation_name: str, api_params: Any) -> Any:
        calls.append(operation_name)
        return inner(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    return calls


def _bad(argv: list[str], writes: AwsCalls, *says: str) -> None:
    writes.clear()
    result = CliRunner().invoke(main, argv)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert all(s in lines[0] for s in says), lines[0]
    assert writes.writes() == []


def test_restore_records_only_the_users_own_snapshot(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, dlm_url: tuple[DlmApi, str], writes: AwsCalls
) -> None:
    homes = _homes(ec2, "alice", "bob")
    theirs = _homes(other_ec2, "alice")
    bobs, other_clusters = _snapshot(ec2, homes["bob"]), _snapshot(other_ec2, theirs["alice"])
    alices = _snapshot(ec2, homes["alice"])
    for snap in (bobs, other_clusters):
        _bad(["restore", "alpha", "alice", snap], writes, snap, "not a backup of alice")
    assert RESTORE_TAG not in _tags(ec2, homes["alice"])

    dry = CliRunner().invoke(main, ["restore", "alpha", "alice", alices, "--dry-run"])
    assert dry.exit_code == 0 and "would restore" in dry.output
    assert RESTORE_TAG not in _tags(ec2, homes["alice"])
    done = CliRunner().invoke(main, ["restore", "alpha", "alice", alices, "--as-folder"])
    assert done.exit_code == 0, done.output
    assert _tags(ec2, homes["alice"])[RESTORE_TAG] == f"{alices} folder"
    assert REPLACED_TAG not in _tags(ec2, homes["alice"])


def test_resize_home_grows_only(
    ec2: LocalCloudEc2, dlm_url: tuple[DlmApi, str], writes: AwsCalls
) -> None:
    volume = _homes(ec2, "alice", size=4)["alice"]
    _bad(["resize-home", "alpha", "alice", "3"], writes, "SIZE_GB 3", "4 GB", "only grow")
    _bad(["resize-home", "alpha", "alice", "4"], writes, "SIZE_GB 4", "only grow")
    _bad(["resize-home", "alpha", "alice", "0"], writes, "SIZE_GB")
    grown = CliRunner().invoke(main, ["resize-home", "alpha", "alice", "9"])
    assert grown.exit_code == 0, grown.output
    assert ec2.client.describe_volumes(VolumeIds=[volume])["Volumes"][0]["Size"] == 9


def test_destroy_removes_the_policy_and_keeps_backups_unless_asked(
    ec2: LocalCloudEc2, dlm_url: tuple[DlmApi, str]
) -> None:
    api, _ = dlm_url
    homes = _homes(ec2, "alice")
    backups = Backups.connect(ec2, REGION, None)
    backups.ensure_policy(
        "arn:aws:iam::1:role/r", policy_details("alpha", True, "cron(0 3 * * ? *)", 3)
    )
    snap = _snapshot(ec2, homes["alice"])
    kept = CliRunner().invoke(main, ["destroy", "alpha", "--yes"])
    assert kept.exit_code == 0, kept.output
    assert api.policies == {}
    assert [s["SnapshotId"] for s in backups.snapshots("alice")] == [snap]
    gone = CliRunner().invoke(main, ["destroy", "alpha", "--yes", "--delete-backups"])
    assert gone.exit_code == 0, gone.output
    assert backups.snapshots("alice") == []


def _attach(ec2: LocalCloudEc2, user: str, instance: Any) -> tuple[Any, Any]:
    import asyncio

    from cloudjhub.home_volumes import attach_home_volume

    return asyncio.run(
        attach_home_volume(ec2, user, f"{user}-id", 2, instance, lambda *_: None, 0.01, 10)
    )


def test_the_next_start_replaces_the_home_or_adds_a_restored_folder(
    ec2: LocalCloudEc2, make_worker: Any
) -> None:
    from cloudjhub.spawner_options import SpawnError

    worker = make_worker("alice")
    home, folder = _attach(ec2, "alice", worker)
    assert folder is None and home.size_gb == 2
    old = home.volume_id
    snap = _snapshot(ec2, old)
    bobs = _snapshot(ec2, _homes(ec2, "bob")["bob"])

    # A restore someone tagged by hand with another user's snapshot is refused.
    ec2.client.create_tags(Resources=[old], Tags=[{"Key": RESTORE_TAG, "Value": f"{bobs} volume"}])
    with pytest.raises(SpawnError, match="not a backup of alice"):
        _attach(ec2, "alice", worker)

    ec2.client.create_tags(Resources=[old], Tags=[{"Key": RESTORE_TAG, "Value": f"{snap} folder"}])
    home, folder = _attach(ec2, "alice", worker)
    assert home.volume_id == old and RESTORE_TAG not in _tags(ec2, old)
    assert folder is not None and folder.from_snapshot == snap
    assert folder.name.startswith("restored-") and folder.device == "/dev/sdg"
    attached = ec2.client.describe_volumes(VolumeIds=[folder.volume_id])["Volumes"][0]
    assert attached["Attachments"][0]["InstanceId"] == worker.id

    ec2.client.create_tags(Resources=[old], Tags=[{"Key": RESTORE_TAG, "Value": f"{snap} volume"}])
    home, folder = _attach(ec2, "alice", worker)
    assert folder is None and home.volume_id not in {old, attached["VolumeId"]}
    assert home.from_snapshot == snap
    assert REPLACED_TAG in _tags(ec2, old) and RESTORE_TAG not in _tags(ec2, old)
    assert ec2.client.describe_volumes(VolumeIds=[old])["Volumes"][0]["State"] == "available"
    assert ec2.find_home_volume("alice")["VolumeId"] == home.volume_id
    again, _ = _attach(ec2, "alice", worker)  # the request is done: nothing more happens
    assert again.volume_id == home.volume_id


def test_status_shows_each_users_home_usage_as_last_reported(
    ec2: LocalCloudEc2, make_worker: Any
) -> None:
    from cloudjhub.aws.hub_restores import tag_usage

    alice, bob = make_worker("alice"), make_worker("bob")
    tag_usage(ec2, alice.id, 3 << 30, 4 << 30)
    shown = CliRunner().invoke(main, ["status", "alpha"])
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.output.splitlines() if alice.id in x)
    assert "t3.medium  3.0/4.0 GB (75%)  " in line
    assert "t3.medium  -  " in next(x for x in shown.output.splitlines() if bob.id in x)
    rows = json.loads(CliRunner().invoke(main, ["status", "alpha", "--json"]).output)["instances"]
    by_id = {r["instance_id"]: r for r in rows}
    assert by_id[alice.id]["home_usage"] == {"used_bytes": 3 << 30, "size_bytes": 4 << 30}
    assert by_id[bob.id]["home_usage"] is None


def test_restore_and_resize_of_a_user_without_a_home_volume_are_bad_input(
    ec2: LocalCloudEc2, dlm_url: tuple[DlmApi, str], writes: AwsCalls
) -> None:
    _homes(ec2, "bob")
    _bad(["resize-home", "alpha", "carol", "5"], writes, "USER carol", "no home volume")
    snap = _snapshot(ec2, _homes(ec2, "carol")["carol"])
    ec2.client.delete_volume(VolumeId=ec2.find_home_volume("carol")["VolumeId"])
    _bad(["restore", "alpha", "carol", snap], writes, "USER carol", "no home volume")
