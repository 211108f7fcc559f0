"""Backups of users' volumes: the cluster's Data Lifecycle Manager policy, the
snapshots it takes, and the admin's restores and resizes, recorded as tags on the
user's home volume for the hub to perform at their next start.

DLM, not a scheduler of ours, takes and prunes the snapshots. A policy targets
volumes by one tag (BACKUP_TAG: DLM ORs its TargetTags, so one tag names both the
cluster and the kind of volume) and copies the volume's tags to each snapshot, so
a snapshot says whose it is.
"""

from __future__ import annotations

from typing import Any

from ..tags import (
    BACKUP_TAG,
    CLUSTER_TAG,
    RESTORE_TAG,
    ROLE_TAG,
    Role,
    backup_target,
    is_server,
    selector,
    tag_dict,
    tag_list,
)
from . import snapshots
from .admin import AdminEc2
from .client import CloudError, NotOurs, boto_client, call
from .dlm_retry import Say, call_with_new_role

DEFAULT_BACKUP_ROLE = "AWSDataLifecycleManagerDefaultRole"
SCHEDULE_NAME = "cloudjhub"
# The CloudError code of a user without a home volume (restore and resize need one).
NO_HOME = "NoHomeVolume"


def role_arn(region: str | None, endpoint_url: str | None, name: str) -> str:
    """The ARN of role `name` in the caller's own account (STS GetCallerIdentity)."""
    sts = boto_client("sts", region, endpoint_url)
    account = call(sts, "get_caller_identity")["Account"]
    return f"arn:{partition_of(region)}:iam::{account}:role/{name}"


def partition_of(region: str | None) -> str:
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def policy_details(cluster: str, home_volumes: bool, cron: str, retain: int) -> dict[str, Any]:
    """DLM's PolicyDetails: snapshot the cluster's targeted volumes on `cron`, keep
    `retain` of each, and copy the volume's tags (cluster, user, user id) over."""
    return {
        "PolicyType": "EBS_SNAPSHOT_MANAGEMENT",
        "ResourceTypes": ["VOLUME"],
        "TargetTags": [{"Key": BACKUP_TAG, "Value": backup_target(cluster, home_volumes)}],
        "Schedules": [
            {
                "Name": SCHEDULE_NAME,
                "CopyTags": True,
                "CreateRule": {"CronExpression": cron},
                "RetainRule": {"Count": retain},
            }
        ],
    }


class Backups:
    """One cluster's backup policy and snapshots, through DLM and EC2."""

    def __init__(self, ec2: AdminEc2, dlm: Any) -> None:
        self.ec2 = ec2
        self.cluster = ec2.cluster
        self.dlm = dlm

    @classmethod
    def connect(cls, ec2: AdminEc2, region: str | None, endpoint_url: str | None) -> Backups:
        return cls(ec2, boto_client("dlm", region, endpoint_url))

    # ---- the policy ----------------------------------------------------------

    def policies(self) -> list[str]:
        """Ids of the cluster's policies (tagged with the cluster, targeting its volumes)."""
        found: list[str] = []
        for home in (True, False):
            wanted = f"{BACKUP_TAG}={backup_target(self.cluster, home)}"
            reply = call(self.dlm, "get_lifecycle_policies", TargetTags=[wanted])
            found += [
                p["PolicyId"]
                for p in reply.get("Policies", [])
                if p.get("Tags", {}).get(CLUSTER_TAG) == self.cluster
            ]
        return list(dict.fromkeys(found))

    def ensure_policy(self, role_arn: str, details: dict[str, Any], say: Say | None = None) -> str:
        """Create the cluster's policy, or bring an existing one to `details` (retried
        while DLM cannot assume a role IAM has not spread yet: dlm_retry)."""
        description = f"cloudjhub {self.cluster}: users' volumes"
        existing = self.policies()
        common: dict[str, Any] = {
            "State": "ENABLED",
            "Description": description,
            "PolicyDetails": details,
        }
        if existing:
            call_with_new_role(
                self.dlm, "update_lifecycle_policy", role_arn, say, PolicyId=existing[0], **common
            )
            return existing[0]
        reply = call_with_new_role(
            self.dlm,
            "create_lifecycle_policy",
            role_arn,
            say,
            Tags={CLUSTER_TAG: self.cluster},
            **common,
        )
        return str(reply["PolicyId"])

    def delete_policy(self, policy_id: str) -> None:
        reply = call(self.dlm, "get_lifecycle_policy", PolicyId=policy_id)
        if reply["Policy"].get("Tags", {}).get(CLUSTER_TAG) != self.cluster:
            raise NotOurs(f"refusing to delete policy {policy_id}: not tagged for {self.cluster}")
        call(self.dlm, "delete_lifecycle_policy", PolicyId=policy_id)

    # ---- snapshots -----------------------------------------------------------

    def snapshots(self, user: str | None = None, server: str | None = None) -> list[dict[str, Any]]:
        """The cluster's backup snapshots (of `user`'s volumes; of one `server`: "" the
        default, None any), oldest first."""
        wanted = selector(self.cluster, user=user, server=server or "")
        found = self.ec2._tagged("describe_snapshots", "Snapshots", wanted, OwnerIds=["self"])
        ours = [
            s
            for s in found
            if tag_dict(s.get("Tags")).get(ROLE_TAG) in snapshots.BACKED_UP_ROLES
            and is_server(tag_dict(s.get("Tags")), server)
        ]
        return sorted(ours, key=lambda s: (str(s.get("StartTime", "")), s["SnapshotId"]))

    def users_snapshot(self, user: str, snapshot_id: str, server: str = "") -> dict[str, Any]:
        """`snapshot_id` if it is a backup of `user`'s `server` ("" the default) in this
        cluster, else NotOurs."""
        return snapshots.users_backup(self.ec2, user, snapshot_id, server)

    def delete_snapshots(self, snapshot_ids: list[str]) -> None:
        for snapshot_id in snapshot_ids:
            found = snapshots.snapshot(self.ec2, snapshot_id)
            tags = {snapshot_id: tag_dict(found.get("Tags"))} if found else {}
            self.ec2.refuse_unless_ours("snapshot", [snapshot_id], tags, [Role.HOME, Role.WORKER])
            call(self.ec2.client, "delete_snapshot", SnapshotId=snapshot_id)

    # ---- a user's home volume --------------------------------------------------

    def home_volume(self, user: str, server: str = "") -> dict[str, Any]:
        volume = self.ec2.find_home_volume(user, server)
        if volume is None:
            which = f" for named server {server!r}" if server else ""
            raise CloudError(
                f"{user} has no home volume{which} in cluster {self.cluster} (restore and "
                "resize-home need USER_HOME_EBS_SIZE above 0)",
                NO_HOME,
            )
        return volume

    def request_restore(self, volume_id: str, snapshot_id: str, as_folder: bool) -> None:
        """Record the restore on the volume; the hub performs it at the next start."""
        value = f"{snapshot_id} {'folder' if as_folder else 'volume'}"
        call(
            self.ec2.client,
            "create_tags",
            Resources=[volume_id],
            Tags=tag_list({RESTORE_TAG: value}),
        )

    def grow(self, volume_id: str, size: int) -> None:
        """ModifyVolume in place; the agent grows the file system at the next start."""
        call(self.ec2.client, "modify_volume", VolumeId=volume_id, Size=size)
