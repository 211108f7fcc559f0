"""The least-privilege IAM policy of the manager (hub) instance role.

The hub launches, starts and stops its own workers and creates and attaches
their home volumes. It terminates workers only when JupyterHub deletes their
user (the spawner's delete_forever) and unassigned warm-pool workers the pool no
longer needs (beyond its target, or of an old type or image), and deletes home volumes then only if the
policy is made with `delete_home_volumes` (the admin's `terminate-workers` and
`destroy` do the rest with the admin's credentials). Everything it may change
must carry the cluster tag and the right role tag, either in the request
(RunInstances, CreateVolume) or already on the resource (Start/Stop/Terminate,
Attach, Delete, console output), so the role cannot touch the manager itself.
It may tag while creating; otherwise it may only set `cloudjhub:user-id` and
`cloudjhub:user-deleted` on the cluster's workers and home volumes not yet
marked deleted (binding them to their user's id, marking a deleted user's), and
`cloudjhub:user`, `cloudjhub:user-id`, `cloudjhub:server`, `cloudjhub:pool` and
`Name` on warm-pool workers still marked as such (a claim), `cloudjhub:prewarm` on
the cluster's manager (`cloudjhub prewarm`'s one-off pool window), and
`cloudjhub:server` and `Name` on a named server's workers and home volumes (a
rename: only on resources that already carry `cloudjhub:server`, so the default
server's never become a named one's). The cluster and role tags, which the
guards trust, cannot be rewritten, and there is no ModifyInstanceAttribute
(a home volume attached after launch is kept on termination by AttachVolume's
own default).

It reads only what the hub reads: DescribeInstances, DescribeImages,
DescribeVolumes, DescribeInstanceTypes and DescribeSubnets (which zone each of
SUBNET_IDS is in, for the capacity fallback), which AWS cannot scope to resources,
so they take Resource "*". No `ec2:Describe*`: that would include
DescribeInstanceAttribute, the user data of every instance in the account.

RunInstances is scoped resource by resource: the instance by its request tags,
IMDSv2 and the allowed instance types; the key pair by name (`CLUSTER-workers`,
made by the launcher); the security groups by their cluster and worker tags;
the image either by id or by tag. By default the image is any one tagged
`cloudjhub:cluster=CLUSTER`, `cloudjhub:role=image`, which is how the launcher
marks the worker image it builds: a tag, not an id, so the policy can be attached
before the image exists and still holds when a re-launch builds a new one (and
the role cannot make an image match, since it tags only at creation). A
CUSTOM_WORKER_AMI was not built by us and may belong to another account, so we
cannot tag it: `worker_amis` names such images by id, and then only those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..config import InstanceConfig
from ..tags import (
    CLUSTER_TAG,
    DELETED_TAG,
    NAME_TAG,
    POOL_CLAIMING,
    POOL_READY,
    POOL_RETIRING,
    POOL_TAG,
    PREWARM_TAG,
    ROLE_TAG,
    SERVER_TAG,
    USER_ID_TAG,
    USER_TAG,
    Role,
    validate_cluster_name,
    workers_key_name,
)
from .iam_backups import hub_statements
from .iam_shared import pass_role_statements
from .iam_spot import spot_statements

DEFAULT_INSTANCE_TYPE: str = InstanceConfig.model_fields["WORKER_INSTANCE_TYPE"].default

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_AMI_RE = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
# family.size (t3.medium, m7i-flex.large, u-6tb1.metal); * and ? are IAM wildcards,
# but the family starts with a letter so that no pattern allows every type.
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9*?-]*\.[a-z0-9*?-]+$")
_KMS_KEY_RE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z0-9-]+):\d{12}:"
    r"key/(mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


class BadInput(ValueError):
    """An input the policy cannot be scoped with; `name` is the input's name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _check(
    name: str, value: str, pattern: re.Pattern[str], allowed: str, any_ok: bool = False
) -> str:
    if any_ok and value == "*":
        return value
    if not pattern.fullmatch(value):
        raise BadInput(name, f"{value!r} is not {allowed}")
    return value


def partition(region: str) -> str:
    """The ARN partition of a region: China and GovCloud have their own."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def manager_policy(
    cluster: str,
    region: str = "*",
    *,
    account: str = "*",
    worker_amis: Iterable[str] = (),
    instance_types: Iterable[str] = (DEFAULT_INSTANCE_TYPE,),
    kms_key_arn: str | None = None,
    delete_home_volumes: bool = False,
    spot: bool = False,
    shared_storage: bool = False,
) -> dict[str, Any]:
    """The policy document (a dict, ready for json.dumps) for `cluster`'s manager role.

    `delete_home_volumes`: for a hub with InstanceSpawner.delete_home_on_user_delete.
    `spot`: a profile launches spot workers (iam_spot.py).
    `shared_storage`: workers launch with the shared folder's role (iam_shared.py).

    Raises BadInput naming the first input that is not what AWS would accept.
    """
    validate_cluster_name(cluster)
    _check("region", region, _REGION_RE, "an AWS region such as us-east-1 (or * for any)", True)
    _check("account", account, _ACCOUNT_RE, "a 12-digit AWS account id (or * for any)", True)
    amis = [
        _check("worker_ami", ami, _AMI_RE, "an AMI id (ami- and 8 or 17 hex digits)")
        for ami in dict.fromkeys(worker_amis)
    ]
    types = [
        _check(
            "instance_type",
            kind,
            _INSTANCE_TYPE_RE,
            "an instance type such as t3.medium (family.size; * and ? match any characters)",
        )
        for kind in dict.fromkeys(instance_types)
    ]
    if not types:
        raise BadInput("instance_type", "at least one instance type is needed")
    part = partition(region)

    def arn(kind: str, name: str = "*", owner: str = account) -> str:
        return f"arn:{part}:ec2:{region}:{owner}:{kind}/{name}"

    instance, volume = arn("instance"), arn("volume")

    def requested(role: Role) -> dict[str, str]:
        return {f"aws:RequestTag/{CLUSTER_TAG}": cluster, f"aws:RequestTag/{ROLE_TAG}": role.value}

    def tagged(role: Role) -> dict[str, str]:
        return {
            f"ec2:ResourceTag/{CLUSTER_TAG}": cluster,
            f"ec2:ResourceTag/{ROLE_TAG}": role.value,
        }

    if amis:
        image: dict[str, Any] = {"Resource": [arn("image", ami, owner="") for ami in amis]}
    else:
        image = {
            "Resource": arn("image", owner=""),
            "Condition": {"StringEquals": tagged(Role.IMAGE)},
        }

    statements: list[dict[str, Any]] = [
        {
            # Exactly the reads of aws/hub.py and aws/client.py, and
            # DescribeInstanceTypes (each type's hypervisor). List actions
            # cannot be scoped to resources.
            "Sid": "DescribeOnlyWhatTheHubReads",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeInstances",
                "ec2:DescribeSubnets",
                "ec2:DescribeVolumes",
            ],
            "Resource": "*",
        },
        {
            # The console output carries the workers' SSH host keys.
            "Sid": "ConsoleOfClusterWorkers",
            "Effect": "Allow",
            "Action": "ec2:GetConsoleOutput",
            "Resource": instance,
            "Condition": {"StringEquals": tagged(Role.WORKER)},
        },
        {
            # ec2:MetadataHttpTokens and ec2:InstanceType exist only for the
            # instance resource, so the volume has a statement of its own.
            "Sid": "RunOnlyClusterWorkersWithImdsv2",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": instance,
            "Condition": {
                "StringEquals": {
                    **requested(Role.WORKER),
                    "ec2:MetadataHttpTokens": "required",
                },
                "StringLike": {"ec2:InstanceType": types},
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
            "Sid": "RunOnlyTheWorkerImage",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            **image,
        },
        {
            "Sid": "RunOnlyWithTheWorkersKeyPair",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": arn("key-pair", workers_key_name(cluster)),
        },
        {
            # The admin's subnets carry no tags of ours; the interface is the
            # launch's own.
            "Sid": "RunInSubnetsWithNewInterfaces",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [arn("subnet"), arn("network-interface")],
        },
        {
            "Sid": "RunInClusterWorkerSecurityGroups",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": arn("security-group"),
            "Condition": {"StringEquals": tagged(Role.WORKER)},
        },
        {
            # Also hibernation: StopInstances with Hibernate=true.
            "Sid": "StartStopClusterWorkers",
            "Effect": "Allow",
            "Action": ["ec2:StartInstances", "ec2:StopInstances"],
            "Resource": instance,
            "Condition": {"StringEquals": tagged(Role.WORKER)},
        },
        {
            # A stopped worker takes the type of the profile its user picked
            # (ModifyInstanceAttribute). ec2:Attribute/InstanceType is the type asked
            # for (Service Authorization Reference, ModifyInstanceAttribute), so only
            # the types workers may run as, and no other attribute: a request that sets
            # another has no such key, and StringLike on a missing key does not match.
            "Sid": "ResizeClusterWorkersToAllowedTypes",
            "Effect": "Allow",
            "Action": "ec2:ModifyInstanceAttribute",
            "Resource": instance,
            "Condition": {
                "StringEquals": tagged(Role.WORKER),
                "StringLike": {"ec2:Attribute/InstanceType": types},
            },
        },
        {
            # Only the workers of a user JupyterHub deleted (delete_forever).
            "Sid": "TerminateClusterWorkersOfDeletedUsers",
            "Effect": "Allow",
            "Action": "ec2:TerminateInstances",
            "Resource": instance,
            "Condition": {"StringEquals": tagged(Role.WORKER)},
        },
        {
            # A worker or home volume is bound to its user's id (none yet, or the one
            # before the hub lost its database) or marked as a deleted user's: only
            # those two keys, only on the cluster's workers and homes, and never on
            # one already marked (a deleted user's stays theirs).
            "Sid": "BindUserIds",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [instance, volume],
            "Condition": {
                "StringEquals": {
                    f"ec2:ResourceTag/{CLUSTER_TAG}": cluster,
                    f"ec2:ResourceTag/{ROLE_TAG}": [Role.WORKER.value, Role.HOME.value],
                },
                "ForAllValues:StringEquals": {"aws:TagKeys": [USER_ID_TAG, DELETED_TAG]},
                "Null": {f"ec2:ResourceTag/{DELETED_TAG}": "true", "aws:TagKeys": "false"},
            },
        },
        {
            # CreateTags as part of RunInstances or CreateVolume, whose own
            # statements require the tags (and ClaimPoolWorkers, BindUserIds).
            "Sid": "TagAtCreation",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [instance, volume],
            "Condition": {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateVolume"]}},
        },
        {
            # Claiming a warm-pool worker (warm_pool.py): tag it (and its root
            # volume) with its user and their id, then drop the pool mark; only these keys, and
            # only on workers that still carry the pool mark, never a user's own.
            "Sid": "ClaimPoolWorkers",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
            "Resource": [instance, volume],
            "Condition": {
                "StringEquals": {
                    **tagged(Role.WORKER),
                    f"ec2:ResourceTag/{POOL_TAG}": [POOL_READY, POOL_CLAIMING, POOL_RETIRING],
                },
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": [USER_TAG, USER_ID_TAG, NAME_TAG, POOL_TAG, SERVER_TAG]
                },
                # ForAllValues holds for a request with no keys at all, and DeleteTags
                # without Tags deletes every tag: the keys must be named.
                "Null": {"aws:TagKeys": "false"},
            },
        },
        {
            # `cloudjhub prewarm` from the manager: the one-off pool window is one tag
            # on the cluster's manager, which the pool keeper reads; only that key.
            "Sid": "PrewarmTagOnClusterManager",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
            "Resource": instance,
            "Condition": {
                "StringEquals": tagged(Role.MANAGER),
                "ForAllValues:StringEquals": {"aws:TagKeys": [PREWARM_TAG]},
                "Null": {"aws:TagKeys": "false"},
            },
        },
        {
            # JupyterHub renamed a named server (named_servers.rename_server): its
            # worker, root and home volumes get the new name; only resources already
            # tagged with a server, not kept from a deleted user, and only these keys.
            "Sid": "RenameNamedServers",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [instance, volume],
            "Condition": {
                "StringEquals": {
                    f"ec2:ResourceTag/{CLUSTER_TAG}": cluster,
                    f"ec2:ResourceTag/{ROLE_TAG}": [Role.WORKER.value, Role.HOME.value],
                },
                "ForAllValues:StringEquals": {"aws:TagKeys": [SERVER_TAG, NAME_TAG]},
                "Null": {
                    f"ec2:ResourceTag/{SERVER_TAG}": "false",
                    f"ec2:ResourceTag/{DELETED_TAG}": "true",
                    "aws:TagKeys": "false",
                },
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
    ]
    statements += hub_statements(cluster, part, region, account)
    if delete_home_volumes:
        statements.append(
            {
                "Sid": "DeleteClusterHomeVolumesOfDeletedUsers",
                "Effect": "Allow",
                "Action": "ec2:DeleteVolume",
                "Resource": volume,
                "Condition": {"StringEquals": tagged(Role.HOME)},
            }
        )
    if spot:
        statements += spot_statements(cluster, part, region, account)
    if shared_storage:
        statements += pass_role_statements(cluster, part, account)
    if kms_key_arn is not None:
        statements += _ebs_key_statements(kms_key_arn, region)
    return {"Version": "2012-10-17", "Statement": statements}


def _ebs_key_statements(key_arn: str, region: str) -> list[dict[str, Any]]:
    """What a caller needs to launch, start or attach volumes encrypted with a customer
    managed key (the account's default EBS key): "Permissions for users" in
    https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption-requirements.html
    lists kms:CreateGrant, Decrypt, DescribeKey, GenerateDataKeyWithoutPlaintext and
    ReEncrypt (ReEncryptFrom and ReEncryptTo), and advises CreateGrant only with
    kms:GrantIsForAWSResource, so that only EC2 itself, acting for the hub, gets grants.
    The key's own policy must also let IAM policies of its account allow these."""
    found = _KMS_KEY_RE.fullmatch(key_arn)
    if not found:
        raise BadInput(
            "kms_key_arn",
            f"{key_arn!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)",
        )
    if region != "*" and found["region"] != region:
        raise BadInput(
            "kms_key_arn",
            f"the key is in {found['region']}, not in {region}: EBS uses keys of its own region",
        )
    if region != "*" and found["partition"] != partition(region):
        raise BadInput("kms_key_arn", f"the key's partition is not {partition(region)}")
    return [
        {
            "Sid": "EbsKeyGrantsOnlyForAwsResources",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": key_arn,
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
        {
            "Sid": "EbsKeyUse",
            "Effect": "Allow",
            "Action": [
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
            ],
            "Resource": key_arn,
        },
    ]
