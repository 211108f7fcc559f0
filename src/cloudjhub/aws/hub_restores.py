"""What the hub does in EC2 for the admin's restores and the agent's usage reports:
volumes made from a user's own backup, the replaced volume marked, the restore
request cleared, last session's restored folders deleted, and the last reported
home usage tagged on the worker."""

from __future__ import annotations

from typing import Any

from ..tags import (
    BACKUP_TAG,
    CLUSTER_TAG,
    HOME_USAGE_TAG,
    REPLACED_TAG,
    RESTORE_TAG,
    RESTORED_FOLDER_TAG,
    Role,
    backup_target,
    tag_dict,
    tag_list,
    tags_for,
)
from .client import NotOurs
from .hub import HubEc2


def volume_from_snapshot(
    ec2: HubEc2,
    user: str,
    user_id: str,
    snapshot: dict[str, Any],
    zone: str,
    size: int,
    folder: str | None = None,
    server: str = "",
) -> str:
    """A home volume (or, with `folder`, a restored folder's) made from `snapshot`."""
    tags = tags_for(ec2.cluster, Role.HOME, user, user_id=user_id, server=server)
    if folder is None:
        tags[BACKUP_TAG] = backup_target(ec2.cluster, True)
    else:
        tags[RESTORED_FOLDER_TAG] = folder
    reply = ec2._call(
        "create_volume",
        AvailabilityZone=zone,
        SnapshotId=snapshot["SnapshotId"],
        Size=max(size, int(snapshot.get("VolumeSize") or 1)),
        VolumeType="gp3",
        Encrypted=True,
        TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list(tags)}],
    )
    return str(reply["VolumeId"])


def volume(ec2: HubEc2, volume_id: str) -> dict[str, Any] | None:
    return ec2._by_id("describe_volumes", "Volumes", "VolumeId", "volume-id", [volume_id]).get(
        volume_id
    )


def restored_folders(ec2: HubEc2, user: str, server: str) -> list[dict[str, Any]]:
    """The restored-folder volumes of `user`'s `server`, in any state."""
    volumes = ec2.home_volumes(user, include_deleted=True, server=server)
    return [v for v in volumes if RESTORED_FOLDER_TAG in tag_dict(v.get("Tags"))]


def delete_restored_folder(ec2: HubEc2, volume_id: str) -> None:
    """Delete a detached restored folder, re-read first: only ever such a volume of this
    cluster (its snapshot stays; the IAM role allows no other DeleteVolume)."""
    found = volume(ec2, volume_id)
    tags = tag_dict(found.get("Tags")) if found else {}
    if (
        tags.get(CLUSTER_TAG) != ec2.cluster
        or tags.get("cloudjhub:role") != Role.HOME.value
        or RESTORED_FOLDER_TAG not in tags
    ):
        raise NotOurs(f"refusing to delete {volume_id}: not a restored folder of this cluster")
    ec2._call("delete_volume", VolumeId=volume_id)


def mark_replaced(ec2: HubEc2, volume_id: str, when: str) -> None:
    """The old home: kept for the admin, never handed out again (tags.belongs_to)."""
    ec2._call("create_tags", Resources=[volume_id], Tags=tag_list({REPLACED_TAG: when}))
    clear_restore(ec2, volume_id)


def clear_restore(ec2: HubEc2, volume_id: str) -> None:
    ec2._call("delete_tags", Resources=[volume_id], Tags=[{"Key": RESTORE_TAG}])


def detach(ec2: HubEc2, volume_id: str, instance_id: str) -> None:
    ec2.guard([instance_id], [Role.WORKER])
    ec2._call("detach_volume", VolumeId=volume_id, InstanceId=instance_id)


def tag_usage(ec2: HubEc2, instance_id: str, used: int, size: int) -> None:
    """The home usage the agent reported, for `cloudjhub status`."""
    ec2._call(
        "create_tags", Resources=[instance_id], Tags=tag_list({HOME_USAGE_TAG: f"{used} {size}"})
    )
