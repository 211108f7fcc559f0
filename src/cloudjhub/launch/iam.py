"""The least-privilege IAM policy of the manager (hub) instance role.

The hub launches, starts and stops its own workers and creates and attaches
their home volumes; it never terminates or deletes anything (the admin's
`terminate-workers` and `destroy` do that with the admin's credentials).
Everything it may change must carry the cluster tag and the right role tag,
either in the request (RunInstances, CreateVolume) or already on the resource
(Start/Stop, Attach), so the role cannot touch the manager itself. It may tag
only while creating: tags already on a resource (`cloudjhub:user`,
`cloudjhub:role`, which the guards trust) cannot be rewritten, and there is no
ModifyInstanceAttribute (a home volume attached after launch is kept on
termination by AttachVolume's own default).
"""

from __future__ import annotations

from typing import Any

from ..tags import CLUSTER_TAG, ROLE_TAG, Role


def manager_policy(cluster: str, region: str = "*") -> dict[str, Any]:
    """The policy document (a dict, ready for json.dumps) for `cluster`'s manager role."""

    def arn(kind: str, account: str = "*") -> str:
        return f"arn:aws:ec2:{region}:{account}:{kind}/*"

    instance, volume = arn("instance"), arn("volume")

    def requested(role: Role) -> dict[str, str]:
        return {f"aws:RequestTag/{CLUSTER_TAG}": cluster, f"aws:RequestTag/{ROLE_TAG}": role.value}

    def tagged(role: Role | None = None) -> dict[str, str]:
        ours = {f"ec2:ResourceTag/{CLUSTER_TAG}": cluster}
        return {**ours, f"ec2:ResourceTag/{ROLE_TAG}": role.value} if role else ours

    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # Describe calls cannot be scoped to resources; the console
                # output carries the workers' SSH host keys.
                "Sid": "ReadInstancesAndConsole",
                "Effect": "Allow",
                "Action": ["ec2:Describe*", "ec2:GetConsoleOutput"],
                "Resource": "*",
            },
            {
                # ec2:MetadataHttpTokens exists only for the instance resource,
                # so the volume has a statement of its own.
                "Sid": "RunOnlyClusterWorkersWithImdsv2",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": instance,
                "Condition": {
                    "StringEquals": {
                        **requested(Role.WORKER),
                        "ec2:MetadataHttpTokens": "required",
                    }
                },
            },
            {
                "Sid": "RunOnlyClusterWorkerVolumes",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": volume,
                "Condition": {"StringEquals": requested(Role.WORKER)},
            },
            {
                # What a launch uses but does not create carries no request tags.
                "Sid": "RunWithImageSubnetKey",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [
                    arn("image", account=""),
                    arn("subnet"),
                    arn("key-pair"),
                    arn("network-interface"),
                ],
            },
            {
                "Sid": "RunInClusterSecurityGroups",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": arn("security-group"),
                "Condition": {"StringEquals": tagged()},
            },
            {
                "Sid": "StartStopClusterWorkers",
                "Effect": "Allow",
                "Action": ["ec2:StartInstances", "ec2:StopInstances"],
                "Resource": instance,
                "Condition": {"StringEquals": tagged(Role.WORKER)},
            },
            {
                # The only CreateTags: as part of RunInstances or CreateVolume,
                # whose own statements require the tags.
                "Sid": "TagAtCreation",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": [instance, volume],
                "Condition": {
                    "StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateVolume"]}
                },
            },
            {
                "Sid": "CreateHomeVolumes",
                "Effect": "Allow",
                "Action": "ec2:CreateVolume",
                "Resource": volume,
                "Condition": {"StringEquals": requested(Role.HOME)},
            },
            {
                "Sid": "AttachToClusterWorkers",
                "Effect": "Allow",
                "Action": "ec2:AttachVolume",
                "Resource": instance,
                "Condition": {"StringEquals": tagged(Role.WORKER)},
            },
            {
                "Sid": "AttachClusterHomeVolumes",
                "Effect": "Allow",
                "Action": "ec2:AttachVolume",
                "Resource": volume,
                "Condition": {"StringEquals": tagged(Role.HOME)},
            },
        ],
    }
