"""IAM for backups: what the hub's role needs to perform restores and report home
usage (added to the manager's policy), the least-privilege policy of the role
Data Lifecycle Manager takes snapshots with (`cloudjhub iam-policy --backup-role`),
and what the admin running `launch --backup-schedule` needs for the backup step
(`cloudjhub iam-policy --launcher-backups`).

The hub may make a volume only from a snapshot tagged for its cluster (DLM copies
the volume's tags to its snapshots), detach only the cluster's home volumes from
its workers, delete only restored-folder volumes, and set or remove only the
restore bookkeeping tags on home volumes and the usage tag on workers. ModifyVolume (`resize-home` run on the manager) is
only for the cluster's home volumes.
"""

from __future__ import annotations

from typing import Any

from ..aws.backups import DEFAULT_BACKUP_ROLE
from ..tags import (
    BACKUP_TAG,
    CLUSTER_TAG,
    HOME_USAGE_TAG,
    REPLACED_TAG,
    RESTORE_TAG,
    RESTORED_FOLDER_TAG,
    ROLE_TAG,
    Role,
    backup_target,
)


def _tagged(cluster: str, role: Role) -> dict[str, str]:
    return {f"ec2:ResourceTag/{CLUSTER_TAG}": cluster, f"ec2:ResourceTag/{ROLE_TAG}": role.value}


def hub_statements(cluster: str, part: str, region: str, account: str) -> list[dict[str, Any]]:
    def arn(kind: str, owner: str = account) -> str:
        return f"arn:{part}:ec2:{region}:{owner}:{kind}/*"

    instance, volume, snapshot = arn("instance"), arn("volume"), arn("snapshot", owner="")
    return [
        {
            # A restore re-reads the snapshot it is asked for; AWS cannot scope it.
            "Sid": "DescribeSnapshotsForRestores",
            "Effect": "Allow",
            "Action": "ec2:DescribeSnapshots",
            "Resource": "*",
        },
        {
            "Sid": "RestoreOnlyFromClusterBackups",
            "Effect": "Allow",
            "Action": "ec2:CreateVolume",
            "Resource": snapshot,
            "Condition": {"StringEquals": {f"ec2:ResourceTag/{CLUSTER_TAG}": cluster}},
        },
        {
            "Sid": "DetachReplacedHomesFromClusterWorkers",
            "Effect": "Allow",
            "Action": "ec2:DetachVolume",
            "Resource": instance,
            "Condition": {"StringEquals": _tagged(cluster, Role.WORKER)},
        },
        {
            "Sid": "DetachOnlyClusterHomeVolumes",
            "Effect": "Allow",
            "Action": "ec2:DetachVolume",
            "Resource": volume,
            "Condition": {"StringEquals": _tagged(cluster, Role.HOME)},
        },
        {
            # A restore done: the old home marked replaced, the request removed.
            "Sid": "RestoreBookkeepingOnHomeVolumes",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
            "Resource": volume,
            "Condition": {
                "StringEquals": _tagged(cluster, Role.HOME),
                "ForAllValues:StringEquals": {"aws:TagKeys": [REPLACED_TAG, RESTORE_TAG]},
                "Null": {"aws:TagKeys": "false"},
            },
        },
        {
            # Last session's restored folder (home_restore.drop_restored_folders):
            # only volumes made as one, never a home.
            "Sid": "DeleteRestoredFolders",
            "Effect": "Allow",
            "Action": "ec2:DeleteVolume",
            "Resource": volume,
            "Condition": {
                "StringEquals": _tagged(cluster, Role.HOME),
                "Null": {f"ec2:ResourceTag/{RESTORED_FOLDER_TAG}": "false"},
            },
        },
        {
            "Sid": "ReportHomeUsageOnClusterWorkers",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": instance,
            "Condition": {
                "StringEquals": _tagged(cluster, Role.WORKER),
                "ForAllValues:StringEquals": {"aws:TagKeys": [HOME_USAGE_TAG]},
                "Null": {"aws:TagKeys": "false"},
            },
        },
        {
            "Sid": "GrowClusterHomeVolumes",
            "Effect": "Allow",
            "Action": "ec2:ModifyVolume",
            "Resource": volume,
            "Condition": {"StringEquals": _tagged(cluster, Role.HOME)},
        },
    ]


# Who may take the role: DLM itself (DLM User Guide, "Default IAM service roles").
DLM_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "dlm.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def backup_role_policy(cluster: str, part: str, region: str, account: str) -> dict[str, Any]:
    """What DLM needs to snapshot this cluster's targeted volumes and prune them: the
    actions of AWSDataLifecycleManagerServiceRole, scoped to the cluster's volumes and
    snapshots instead of every one in the account."""
    volume = f"arn:{part}:ec2:{region}:{account}:volume/*"
    snapshot = f"arn:{part}:ec2:{region}::snapshot/*"
    targets = [backup_target(cluster, True), backup_target(cluster, False)]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DescribeWhatToBackUp",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeInstances",
                    "ec2:DescribeSnapshots",
                    "ec2:DescribeVolumes",
                ],
                "Resource": "*",
            },
            {
                "Sid": "SnapshotOnlyTheClustersVolumes",
                "Effect": "Allow",
                "Action": "ec2:CreateSnapshot",
                "Resource": volume,
                "Condition": {"StringEquals": {f"ec2:ResourceTag/{BACKUP_TAG}": targets}},
            },
            {
                "Sid": "MakeSnapshots",
                "Effect": "Allow",
                "Action": "ec2:CreateSnapshot",
                "Resource": snapshot,
            },
            {
                "Sid": "TagSnapshotsAsTheyAreMade",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": snapshot,
                "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSnapshot"}},
            },
            {
                "Sid": "PruneOnlyTheClustersSnapshots",
                "Effect": "Allow",
                "Action": "ec2:DeleteSnapshot",
                "Resource": snapshot,
                "Condition": {"StringEquals": {f"ec2:ResourceTag/{CLUSTER_TAG}": cluster}},
            },
        ],
    }


def launcher_backup_policy(cluster: str, part: str, region: str, account: str) -> dict[str, Any]:
    """The launcher's backup step: find the account's DLM default role and pass it to
    DLM only, and manage the cluster's lifecycle policy (created tagged for it;
    changed only if so tagged)."""
    role = f"arn:{part}:iam::{account}:role/{DEFAULT_BACKUP_ROLE}"
    policies = f"arn:{part}:dlm:{region}:{account}:policy/*"
    ours = {f"aws:ResourceTag/{CLUSTER_TAG}": cluster}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # No iam:CreateRole or iam:AttachRolePolicy: CreateRole cannot limit the
                # trust policy written, so a launcher holding it could make this role
                # trust itself and take DLM's account-wide snapshot rights. An account
                # admin makes the role once (`aws dlm create-default-role`).
                "Sid": "FindTheDlmDefaultRole",
                "Effect": "Allow",
                "Action": ["iam:GetRole", "iam:ListAttachedRolePolicies"],
                "Resource": role,
            },
            {
                "Sid": "PassTheRoleOnlyToDlm",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": role,
                "Condition": {"StringEquals": {"iam:PassedToService": "dlm.amazonaws.com"}},
            },
            {
                # Listing cannot be scoped to a resource (DLM Service Authorization Reference).
                "Sid": "FindTheClustersPolicy",
                "Effect": "Allow",
                "Action": "dlm:GetLifecyclePolicies",
                "Resource": "*",
            },
            {
                "Sid": "CreateThePolicyTaggedForTheCluster",
                "Effect": "Allow",
                "Action": ["dlm:CreateLifecyclePolicy", "dlm:TagResource"],
                "Resource": policies,
                "Condition": {"StringEquals": {f"aws:RequestTag/{CLUSTER_TAG}": cluster}},
            },
            {
                "Sid": "ChangeOnlyTheClustersPolicy",
                "Effect": "Allow",
                "Action": [
                    "dlm:GetLifecyclePolicy",
                    "dlm:UpdateLifecyclePolicy",
                    "dlm:DeleteLifecyclePolicy",
                ],
                "Resource": policies,
                "Condition": {"StringEquals": ours},
            },
        ],
    }
