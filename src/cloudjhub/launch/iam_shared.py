"""IAM for the shared folder's EFS file system (`launch --shared-storage efs`).

Without a file system policy EFS lets every NFS client that reaches a mount target
in, as any uid it claims ("Default EFS file system policy": full access for anonymous
clients; EFS User Guide, "Using IAM to control access to file systems"). So launch
puts a policy on the file system that:

- denies every action over a connection without TLS (`aws:SecureTransport` false);
- allows ClientMount, ClientWrite and ClientRootAccess (the agent works on the tree
  as root) only to the workers' role and the manager's role, and only through a
  mount target (`elasticfilesystem:AccessedViaMountTarget`).

A policy that allows no anonymous principal refuses a client that mounts without IAM
authorization (the console's "Prevent anonymous access" removes exactly that grant;
same page, and "Creating file system policies"), and IAM authorization needs the EFS
mount helper (`mount -t efs -o tls,iam`; same page, "Important"). A student's own
NFS client on a worker has no TLS tunnel and no credentials: nfs_guard.py keeps it
from the instance's.

The workers' role (`CLUSTER-workers`) may do those three actions on that file system
only; the hub passes it on RunInstances, so its policy gets iam:PassRole on that role
only, only to EC2 (IAM User Guide, "Granting a user permissions to pass a role to an
AWS service": the `iam:PassedToService` condition key).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tags import workers_role_name

CLIENT_ACTIONS = [
    "elasticfilesystem:ClientMount",
    "elasticfilesystem:ClientRootAccess",
    "elasticfilesystem:ClientWrite",
]
EC2_SERVICE = "ec2.amazonaws.com"
EC2_TRUST: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": EC2_SERVICE}, "Action": "sts:AssumeRole"}
    ],
}


def workers_role_arn(cluster: str, part: str, account: str) -> str:
    return f"arn:{part}:iam::{account}:role/{workers_role_name(cluster)}"


def file_system_policy(fs_arn: str, principals: Iterable[str]) -> dict[str, Any]:
    """The file system's resource policy: TLS always; mount, write and root only for
    `principals` (role ARNs), through a mount target."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyWithoutTls",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "*",
                "Resource": fs_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "ClusterRolesThroughMountTargets",
                "Effect": "Allow",
                "Principal": {"AWS": sorted(set(principals))},
                "Action": CLIENT_ACTIONS,
                "Resource": fs_arn,
                "Condition": {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}},
            },
        ],
    }


def workers_role_policy(fs_arn: str) -> dict[str, Any]:
    """The workers' role's only permissions: the NFS client actions on this file system."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "MountTheSharedFolder",
                "Effect": "Allow",
                "Action": CLIENT_ACTIONS,
                "Resource": fs_arn,
            }
        ],
    }


def pass_role_statements(cluster: str, part: str, account: str) -> list[dict[str, Any]]:
    """The hub's: hand the workers' role to the workers it launches, and nothing else."""
    return [
        {
            "Sid": "PassTheWorkersRoleToEc2",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": workers_role_arn(cluster, part, account),
            "Condition": {"StringEquals": {"iam:PassedToService": EC2_SERVICE}},
        }
    ]
