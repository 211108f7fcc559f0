"""Restored folders (`restore --as-folder`): one per session, none left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner

from cloudjhub.aws.client import CloudError
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.home_volumes import attach_home_volume
from cloudjhub.local.dlm import DlmApi
from cloudjhub.tags import RESTORE_TAG, RESTORED_FOLDER_TAG, tag_dict
from tests.unit.test_backups import _snapshot


def _attach(ec2: LocalCloudEc2, instance: Any, server: str = "") -> tuple[Any, Any]:
    return asyncio.run(
        attach_home_volume(
            ec2, "alice", "alice-id", 2, instance, lambda *_: None, 0.01, 10, server=server
        )
    )


def _ask(ec2: LocalCloudEc2, home: str, snapshot: str) -> None:
    ec2.client.create_tags(
        Resources=[home], Tags=[{"Key": RESTORE_TAG, "Value": f"{snapshot} folder"}]
    )


def _folders(ec2: LocalCloudEc2) -> list[dict[str, Any]]:
    volumes = ec2.client.describe_volumes()["Volumes"]
    return [v for v in volumes if RESTORED_FOLDER_TAG in tag_dict(v.get("Tags"))]


def _devices(ec2: LocalCloudEc2, instance_id: str) -> list[str]:
    return [
        a["Device"]
        for v in ec2.client.describe_volumes()["Volumes"]
        for a in v.get("Attachments", [])
        if a["InstanceId"] == instance_id
    ]


def test_a_second_folder_restore_replaces_the_first_and_none_is_left(
    ec2: LocalCloudEc2, make_worker: Any
) -> None:
    worker = make_worker("alice")
    home, _ = _attach(ec2, worker)
    snap = _snapshot(ec2, home.volume_id)
    _ask(ec2, home.volume_id, snap)
    _, first = _attach(ec2, worker)
    _ask(ec2, home.volume_id, snap)
    _, second = _attach(ec2, worker)
    assert first is not None and second is not None
    assert [v["VolumeId"] for v in _folders(ec2)] == [second.volume_id]
    devices = _devices(ec2, worker.id)
    assert sorted(devices) == ["/dev/sda1", "/dev/sdf", "/dev/sdg"], (
        devices
    )  # one volume per device

    # The next start without a request: last session's folder is gone, the home stays.
    again, folder = _attach(ec2, worker)
    assert folder is None and again.volume_id == home.volume_id
    assert _folders(ec2) == []
    assert sorted(_devices(ec2, worker.id)) == ["/dev/sda1", "/dev/sdf"]


def test_a_folder_whose_attach_fails_is_deleted(
    ec2: LocalCloudEc2, make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = make_worker("alice")
    home, _ = _attach(ec2, worker)
    _ask(ec2, home.volume_id, _snapshot(ec2, home.volume_id))
    real = ec2.attach_volume

    def refuse(volume_id: str, instance_id: str, device: str) -> None:
        if device == "/dev/sdg":
            raise CloudError("Attachment point /dev/sdg is already in use", "InvalidParameterValue")
        real(volume_id, instance_id, device)

    monkeypatch.setattr(ec2, "attach_volume", refuse)
    with pytest.raises(CloudError):
        _attach(ec2, worker)
    assert _folders(ec2) == []


def test_destroy_deletes_restored_folders_and_keeps_homes(
    ec2: LocalCloudEc2, make_worker: Any, local_dlm: tuple[DlmApi, str]
) -> None:
    worker = make_worker("alice")
    home, _ = _attach(ec2, worker)
    _ask(ec2, home.volume_id, _snapshot(ec2, home.volume_id))
    _attach(ec2, worker)
    assert len(_folders(ec2)) == 1
    done = CliRunner().invoke(main, ["destroy", "alpha", "--yes"])
    assert done.exit_code == 0, done.output
    assert _folders(ec2) == []
    assert ec2.find_home_volume("alice") is not None
