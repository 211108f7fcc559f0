"""The manager role's IAM policy: its exact structure, and what moto's IAM enforces of it.

moto evaluates IAM at the action level only: EC2 requests are authorised
against resource "*", and a Condition passes when the request carries no value
for its key. So (a) asserts every statement, condition key and value exactly,
checks that the EC2 actions are exactly those the hub's code calls, and checks
each option of `cloudjhub iam-policy`; (b) runs the real `LocalCloudEc2` calls of a
hub with credentials holding the policy's actions, to show what is allowed and that
terminate, delete and reading user data are denied. test_iam_lint.py runs two IAM
linters on the printed policy.
"""

from __future__ import annotations

import ast
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto.core import enable_iam_authentication

from cloudjhub.aws import hub_restores
from cloudjhub.aws.client import RETRY_CONFIG, CloudError, NotOurs
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.launch.groups import ensure_security_groups
from cloudjhub.launch.iam import BadInput, manager_policy
from cloudjhub.launch.options import LaunchOptions

CLUSTER = "alpha"
INSTANCE = "arn:aws:ec2:*:*:instance/*"
VOLUME = "arn:aws:ec2:*:*:volume/*"
OURS = {"ec2:ResourceTag/cloudjhub:cluster": "alpha"}
WORKER_TAGGED = {"StringEquals": {**OURS, "ec2:ResourceTag/cloudjhub:role": "worker"}}
HOME_TAGGED = {"StringEquals": {**OURS, "ec2:ResourceTag/cloudjhub:role": "home"}}
IMAGE_TAGGED = {"StringEquals": {**OURS, "ec2:ResourceTag/cloudjhub:role": "image"}}
REQUEST_WORKER = {
    "aws:RequestTag/cloudjhub:cluster": "alpha",
    "aws:RequestTag/cloudjhub:role": "worker",
}
DENIED = {"AccessDenied", "UnauthorizedOperation"}
ADD_USER_ID = {
    "StringEquals": {**OURS, "ec2:ResourceTag/cloudjhub:role": ["worker", "home"]},
    "ForAllValues:StringEquals": {"aws:TagKeys": ["cloudjhub:user-id", "cloudjhub:user-deleted"]},
    "Null": {"ec2:ResourceTag/cloudjhub:user-deleted": "true", "aws:TagKeys": "false"},
}
KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SRC = Path(__file__).resolve().parents[2] / "src" / "cloudjhub"
# Where the hub's EC2 calls are made (the hub's door) or could be (its users).
HUB_SIDE = (
    "aws/hub.py",
    "aws/client.py",
    "fleet.py",
    "spawner.py",
    "reaper.py",
    "commands/reap.py",
    "aws/hub_restores.py",
    "aws/snapshots.py",
)
# `cloudjhub resize-home`, when an admin runs it on the manager with its role.
ADMIN_ON_MANAGER = {"ec2:ModifyVolume"}
# Not called yet: the hub will ask each type's hypervisor.
SOON = {"ec2:DescribeInstanceTypes"}


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def ec2_actions(policy: dict[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] for a in as_list(s["Action"]) if a.startswith("ec2:")}


# ---- (a) structure ------------------------------------------------------------------


def test_policy_statements_exactly() -> None:
    policy = manager_policy(CLUSTER)

    assert policy["Version"] == "2012-10-17"
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert len(by_sid) == len(policy["Statement"]) == 27
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    expected: dict[str, tuple[Any, Any, Any]] = {  # Sid: (Action, Resource, Condition)
        "DescribeOnlyWhatTheHubReads": (
            [
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeInstances",
                "ec2:DescribeSubnets",
                "ec2:DescribeVolumes",
            ],
            "*",
            None,
        ),
        "ConsoleOfClusterWorkers": ("ec2:GetConsoleOutput", INSTANCE, WORKER_TAGGED),
        "RunOnlyClusterWorkersWithImdsv2": (
            "ec2:RunInstances",
            INSTANCE,
            {
                "StringEquals": {**REQUEST_WORKER, "ec2:MetadataHttpTokens": "required"},
                "StringLike": {"ec2:InstanceType": ["t3.medium"]},
            },
        ),
        "RunOnlyClusterWorkerVolumes": (
            "ec2:RunInstances",
            VOLUME,
            {"StringEquals": REQUEST_WORKER},
        ),
        "RunOnlyTheWorkerImage": ("ec2:RunInstances", "arn:aws:ec2:*::image/*", IMAGE_TAGGED),
        "RunOnlyWithTheWorkersKeyPair": (
            "ec2:RunInstances",
            "arn:aws:ec2:*:*:key-pair/alpha-workers",
            None,
        ),
        "RunInSubnetsWithNewInterfaces": (
            "ec2:RunInstances",
            ["arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:network-interface/*"],
            None,
        ),
        "RunInClusterWorkerSecurityGroups": (
            "ec2:RunInstances",
            "arn:aws:ec2:*:*:security-group/*",
            WORKER_TAGGED,
        ),
        "StartStopClusterWorkers": (
            ["ec2:StartInstances", "ec2:StopInstances"],
            INSTANCE,
            WORKER_TAGGED,
        ),
        "ResizeClusterWorkersToAllowedTypes": (
            "ec2:ModifyInstanceAttribute",
            INSTANCE,
            {**WORKER_TAGGED, "StringLike": {"ec2:Attribute/InstanceType": ["t3.medium"]}},
        ),
        "TerminateClusterWorkersOfDeletedUsers": (
            "ec2:TerminateInstances",
            INSTANCE,
            WORKER_TAGGED,
        ),
        "TagAtCreation": (
            "ec2:CreateTags",
            [INSTANCE, VOLUME],
            {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateVolume"]}},
        ),
        "ClaimPoolWorkers": (
            ["ec2:CreateTags", "ec2:DeleteTags"],
            [INSTANCE, VOLUME],
            {
                "StringEquals": {
                    **WORKER_TAGGED["StringEquals"],
                    "ec2:ResourceTag/cloudjhub:pool": ["ready", "claiming", "retiring"],
                },
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": [
                        "cloudjhub:user",
                        "cloudjhub:user-id",
                        "Name",
                        "cloudjhub:pool",
                        "cloudjhub:server",
                    ]
                },
                "Null": {"aws:TagKeys": "false"},  # DeleteTags with no keys deletes all
            },
        ),
        "RenameNamedServers": (
            "ec2:CreateTags",
            [INSTANCE, VOLUME],
            {
                "StringEquals": {
                    "ec2:ResourceTag/cloudjhub:cluster": "alpha",
                    "ec2:ResourceTag/cloudjhub:role": ["worker", "home"],
                },
                "ForAllValues:StringEquals": {"aws:TagKeys": ["cloudjhub:server", "Name"]},
                "Null": {
                    "ec2:ResourceTag/cloudjhub:server": "false",  # a named server's only
                    "ec2:ResourceTag/cloudjhub:user-deleted": "true",
                    "aws:TagKeys": "false",
                },
            },
        ),
        "BindUserIds": ("ec2:CreateTags", [INSTANCE, VOLUME], ADD_USER_ID),
        "PrewarmTagOnClusterManager": (
            ["ec2:CreateTags", "ec2:DeleteTags"],
            INSTANCE,
            {
                "StringEquals": {
                    "ec2:ResourceTag/cloudjhub:cluster": "alpha",
                    "ec2:ResourceTag/cloudjhub:role": "manager",
                },
                "ForAllValues:StringEquals": {"aws:TagKeys": ["cloudjhub:prewarm"]},
                "Null": {"aws:TagKeys": "false"},
            },
        ),
        "CreateHomeVolumes": (
            "ec2:CreateVolume",
            VOLUME,
            {
                "StringEquals": {
                    "aws:RequestTag/cloudjhub:cluster": "alpha",
                    "aws:RequestTag/cloudjhub:role": "home",
                }
            },
        ),
        "AttachToClusterWorkers": ("ec2:AttachVolume", INSTANCE, WORKER_TAGGED),
        "AttachClusterHomeVolumes": ("ec2:AttachVolume", VOLUME, HOME_TAGGED),
        # Restores (home_restore.py) and usage reports (home_usage.py): launch/iam_backups.py.
        "DescribeSnapshotsForRestores": ("ec2:DescribeSnapshots", "*", None),
        "RestoreOnlyFromClusterBackups": (
            "ec2:CreateVolume",
            "arn:aws:ec2:*::snapshot/*",
            {"StringEquals": OURS},
        ),
        "DetachReplacedHomesFromClusterWorkers": ("ec2:DetachVolume", INSTANCE, WORKER_TAGGED),
        "DetachOnlyClusterHomeVolumes": ("ec2:DetachVolume", VOLUME, HOME_TAGGED),
        "RestoreBookkeepingOnHomeVolumes": (
            ["ec2:CreateTags", "ec2:DeleteTags"],
            VOLUME,
            {
                **HOME_TAGGED,
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["cloudjhub:replaced", "cloudjhub:restore"]
                },
                "Null": {"aws:TagKeys": "false"},
            },
        ),
        "DeleteRestoredFolders": (
            "ec2:DeleteVolume",
            VOLUME,
            {**HOME_TAGGED, "Null": {"ec2:ResourceTag/cloudjhub:restored-folder": "false"}},
        ),
        "ReportHomeUsageOnClusterWorkers": (
            "ec2:CreateTags",
            INSTANCE,
            {
                **WORKER_TAGGED,
                "ForAllValues:StringEquals": {"aws:TagKeys": ["cloudjhub:home-usage"]},
                "Null": {"aws:TagKeys": "false"},
            },
        ),
        "GrowClusterHomeVolumes": ("ec2:ModifyVolume", VOLUME, HOME_TAGGED),
    }
    assert set(by_sid) == set(expected)
    for sid, (action, resource, condition) in expected.items():
        statement = by_sid[sid]
        assert statement["Action"] == action, sid
        assert statement["Resource"] == resource, sid
        assert statement.get("Condition") == condition, sid
        allowed = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert not allowed, f"{sid} has {allowed}"


def hub_ec2_calls() -> set[str]:
    """Every EC2 operation named in the hub side's code, as an IAM action."""
    api = boto3.session.Session().client("ec2", region_name="us-east-1").meta
    names = api.method_to_api_mapping
    found: set[str] = set()
    for module in HUB_SIDE:
        for node in ast.walk(ast.parse((SRC / module).read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.add(f"ec2:{names[node.value]}")
    return found


def test_ec2_actions_are_exactly_what_the_hub_calls() -> None:
    """No Describe* and nothing unused: the hub side's calls, DescribeInstanceTypes, and
    CreateTags, which RunInstances and CreateVolume need for their TagSpecifications."""
    calls = hub_ec2_calls()

    assert "ec2:DescribeInstances" in calls and "ec2:RunInstances" in calls  # the scan works
    allowed = calls | SOON | ADMIN_ON_MANAGER
    assert ec2_actions(manager_policy(CLUSTER, delete_home_volumes=True)) == allowed
    assert ec2_actions(manager_policy(CLUSTER)) == allowed
    reads = {a for a in ec2_actions(manager_policy(CLUSTER)) if a.startswith("ec2:Describe")}
    assert reads == {
        "ec2:DescribeImages",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstances",
        "ec2:DescribeSnapshots",
        "ec2:DescribeSubnets",
        "ec2:DescribeVolumes",
    }


def test_policy_terminates_only_workers_and_deletes_homes_only_when_asked() -> None:
    """TerminateInstances only on the cluster's workers (delete_forever); DeleteVolume on
    restored folders, and on the cluster's home volumes only with delete_home_volumes."""
    for policy in (manager_policy(CLUSTER), manager_policy(CLUSTER, kms_key_arn=KEY)):
        actions = {a for s in policy["Statement"] for a in as_list(s["Action"])}
        assert not [a for a in actions if a == "*" or a.startswith("ec2:*")]
        # DeleteTags only drops a warm-pool worker's claim mark (ClaimPoolWorkers) and
        # the manager's one-off pool window (PrewarmTagOnClusterManager) and a done restore's
        # request (RestoreBookkeepingOnHomeVolumes).
        # DeleteVolume: only last session's restored folders (DeleteRestoredFolders).
        deleting = {a for a in actions if "Delete" in a or "Deregister" in a or "Revoke" in a}
        assert deleting <= {"ec2:DeleteTags", "ec2:DeleteVolume"}
        [folders] = [s for s in policy["Statement"] if "ec2:DeleteVolume" in as_list(s["Action"])]
        assert folders["Sid"] == "DeleteRestoredFolders"
        assert folders["Condition"]["Null"] == {
            "ec2:ResourceTag/cloudjhub:restored-folder": "false"
        }
        untag = [s for s in policy["Statement"] if "ec2:DeleteTags" in as_list(s["Action"])]
        assert [s["Sid"] for s in untag] == [
            "ClaimPoolWorkers",
            "PrewarmTagOnClusterManager",
            "RestoreBookkeepingOnHomeVolumes",
        ]
        for statement in untag:
            keys = statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]
            assert "cloudjhub:cluster" not in keys and "cloudjhub:role" not in keys
            assert statement["Condition"]["Null"] == {"aws:TagKeys": "false"}
        terminating = [s for s in policy["Statement"] if "Terminate" in str(s["Action"])]
        assert [(s["Action"], s["Resource"], s["Condition"]) for s in terminating] == [
            ("ec2:TerminateInstances", INSTANCE, WORKER_TAGGED)
        ]
    deleting_statements = [
        s
        for s in manager_policy(CLUSTER, delete_home_volumes=True)["Statement"]
        if "ec2:DeleteVolume" in as_list(s["Action"])
    ]
    assert [(s["Action"], s["Resource"], s["Condition"]) for s in deleting_statements][1:] == [
        ("ec2:DeleteVolume", VOLUME, HOME_TAGGED)
    ]


def test_policy_modifies_only_a_workers_type_and_never_retags() -> None:
    """ModifyInstanceAttribute only to set a worker's type to one workers may run as
    (no user data, no DeleteOnTermination, no security groups), and CreateTags only
    while creating, to bind a
    cloudjhub:user-id or mark a deleted user's (never on one already marked), or on a
    warm-pool worker still marked as one (a claim): the role cannot rewrite the
    cluster/role tags the guards trust, nor the user tag of a user's own instance."""
    for cluster in ("alpha", "beta-2"):
        statements = manager_policy(cluster, kms_key_arn=KEY)["Statement"]
        for statement in statements:
            actions = as_list(statement["Action"])
            modifies = [a for a in actions if a.startswith("ec2:Modify")]
            if statement["Sid"] == "ResizeClusterWorkersToAllowedTypes":
                assert modifies == ["ec2:ModifyInstanceAttribute"]
                assert statement["Condition"]["StringLike"] == {
                    "ec2:Attribute/InstanceType": ["t3.medium"]
                }
                assert statement["Condition"]["StringEquals"] == {
                    "ec2:ResourceTag/cloudjhub:cluster": cluster,
                    "ec2:ResourceTag/cloudjhub:role": "worker",
                }
            elif statement["Sid"] == "GrowClusterHomeVolumes":  # resize-home
                assert modifies == ["ec2:ModifyVolume"]
                assert statement["Resource"] == VOLUME
                assert (
                    statement["Condition"]["StringEquals"]["ec2:ResourceTag/cloudjhub:role"]
                    == "home"
                )
            else:
                assert not modifies, statement["Sid"]
            assert not [a for a in actions if "*" in a], statement["Sid"]  # no wildcards
        tagging = [s for s in statements if "ec2:CreateTags" in as_list(s["Action"])]
        assert [s["Sid"] for s in tagging] == [
            "BindUserIds",
            "TagAtCreation",
            "ClaimPoolWorkers",
            "PrewarmTagOnClusterManager",
            "RenameNamedServers",
            "RestoreBookkeepingOnHomeVolumes",
            "ReportHomeUsageOnClusterWorkers",
        ]
        # The manager itself: only the one-off pool window's key, only this cluster's.
        assert tagging[3]["Condition"] == {
            "StringEquals": {
                "ec2:ResourceTag/cloudjhub:cluster": cluster,
                "ec2:ResourceTag/cloudjhub:role": "manager",
            },
            "ForAllValues:StringEquals": {"aws:TagKeys": ["cloudjhub:prewarm"]},
            "Null": {"aws:TagKeys": "false"},
        }
        assert tagging[0]["Condition"] == {
            **ADD_USER_ID,
            "StringEquals": {
                "ec2:ResourceTag/cloudjhub:cluster": cluster,
                "ec2:ResourceTag/cloudjhub:role": ["worker", "home"],
            },
        }
        assert tagging[1]["Condition"] == {
            "StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateVolume"]}
        }
        claim = tagging[2]["Condition"]
        assert claim["StringEquals"]["ec2:ResourceTag/cloudjhub:pool"] == [
            "ready",
            "claiming",
            "retiring",
        ]
        assert claim["StringEquals"]["ec2:ResourceTag/cloudjhub:role"] == "worker"
        assert set(claim["ForAllValues:StringEquals"]["aws:TagKeys"]) == {
            "cloudjhub:user",
            "cloudjhub:user-id",
            "cloudjhub:pool",
            "cloudjhub:server",
            "Name",
        }
        rename = tagging[4]["Condition"]
        assert rename["Null"]["ec2:ResourceTag/cloudjhub:server"] == "false"
        assert rename["ForAllValues:StringEquals"]["aws:TagKeys"] == ["cloudjhub:server", "Name"]


def test_existing_instances_are_touched_only_if_tagged_worker() -> None:
    """Start, stop, attach and console output need cloudjhub:role=worker on the instance,
    so the hub's role cannot stop, change or read the manager (or a builder) of its own
    cluster; on the manager it may only set or drop `cloudjhub:prewarm`."""
    for cluster in ("alpha", "beta-2"):
        touching = 0
        for statement in manager_policy(cluster)["Statement"]:
            if INSTANCE not in as_list(statement["Resource"]):
                continue
            values = statement["Condition"]["StringEquals"]
            if "ec2:CreateAction" in values:
                continue
            tag = (
                "aws:RequestTag" if statement["Action"] == "ec2:RunInstances" else "ec2:ResourceTag"
            )
            assert values[f"{tag}/cloudjhub:cluster"] == cluster, statement["Sid"]
            if values[f"{tag}/cloudjhub:role"] == "manager":
                assert statement["Sid"] == "PrewarmTagOnClusterManager"
                assert statement["Condition"]["ForAllValues:StringEquals"] == {
                    "aws:TagKeys": ["cloudjhub:prewarm"]
                }
                continue
            assert values[f"{tag}/cloudjhub:role"] in ("worker", ["worker", "home"])
            touching += 1
        # run, console, start/stop, resize, terminate, attach, add user-id, claim, detach,
        # usage, rename
        assert touching == 11


def test_every_change_needs_the_cluster_tag_of_that_cluster() -> None:
    """Each action on instances, volumes, images or groups except the reads is tag-conditioned;
    the key pair and subnets are named, not tagged, and never include an instance or volume."""
    untagged = (
        "DescribeOnlyWhatTheHubReads",
        "DescribeSnapshotsForRestores",
        "RunOnlyWithTheWorkersKeyPair",
    )
    for cluster in ("alpha", "beta-2"):
        for statement in manager_policy(cluster)["Statement"]:
            resources = as_list(statement["Resource"])
            if statement["Sid"] in (*untagged, "RunInSubnetsWithNewInterfaces"):
                assert not [r for r in resources if "instance/" in r or "volume/" in r]
                assert not [r for r in resources if "security-group/" in r or "image/" in r]
                continue
            values = statement["Condition"]["StringEquals"]
            assert cluster in values.values() or set(values) == {"ec2:CreateAction"}


def test_region_and_account_scope_the_arns() -> None:
    policy = json.dumps(manager_policy(CLUSTER, region="eu-west-1", account="123456789012"))
    assert "arn:aws:ec2:eu-west-1:123456789012:instance/*" in policy
    assert "arn:aws:ec2:eu-west-1:123456789012:key-pair/alpha-workers" in policy
    assert "arn:aws:ec2:eu-west-1::image/*" in policy  # images have no account in their ARN
    assert "ec2:*:" not in policy and ":*:" not in policy
    china = json.dumps(manager_policy(CLUSTER, region="cn-north-1"))
    assert "arn:aws-cn:ec2:cn-north-1:*:instance/*" in china and "arn:aws:" not in china


def test_runs_only_from_the_worker_image_types_key_pair_and_groups() -> None:
    by_sid = {
        s["Sid"]: s
        for s in manager_policy(
            CLUSTER,
            "us-east-1",
            worker_amis=["ami-0123456789abcdef0", "ami-12345678", "ami-12345678"],
            instance_types=["t3.large", "m5.*"],
        )["Statement"]
    }

    # Named images instead of the tagged one (a CUSTOM_WORKER_AMI cannot carry our tags).
    assert by_sid["RunOnlyTheWorkerImage"]["Resource"] == [
        "arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0",
        "arn:aws:ec2:us-east-1::image/ami-12345678",
    ]
    assert "Condition" not in by_sid["RunOnlyTheWorkerImage"]
    condition = by_sid["RunOnlyClusterWorkersWithImdsv2"]["Condition"]
    assert condition["StringLike"] == {"ec2:InstanceType": ["t3.large", "m5.*"]}
    # The key pair the launcher imports for workers, and only that one.
    opts = LaunchOptions(
        cluster=CLUSTER,
        base_ami="ami-12345678",
        private_subnet="subnet-1",
        public_subnet="subnet-2",
        key_name="admin",
        key_file=Path("admin.pem"),
    )
    key_pair = f"arn:aws:ec2:us-east-1:*:key-pair/{opts.workers_key_name}"
    assert by_sid["RunOnlyWithTheWorkersKeyPair"]["Resource"] == key_pair
    assert by_sid["RunInClusterWorkerSecurityGroups"]["Condition"] == WORKER_TAGGED
    # The default: any image the launcher built and tagged for this cluster.
    default = {s["Sid"]: s for s in manager_policy(CLUSTER)["Statement"]}
    assert default["RunOnlyTheWorkerImage"]["Condition"] == IMAGE_TAGGED


def test_kms_key_adds_only_the_grants_ebs_needs() -> None:
    plain = manager_policy(CLUSTER, "eu-west-1")["Statement"]
    statements = manager_policy(CLUSTER, "eu-west-1", kms_key_arn=KEY)["Statement"]

    assert statements[: len(plain)] == plain
    assert statements[len(plain) :] == [
        {
            "Sid": "EbsKeyGrantsOnlyForAwsResources",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": KEY,
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
            "Resource": KEY,
        },
    ]
    assert not [s for s in plain if any(a.startswith("kms:") for a in as_list(s["Action"]))]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"region": ""}, "region"),
        ({"region": "us-east-1*"}, "region"),
        ({"account": "12345678901"}, "account"),
        ({"worker_amis": ["ami-xyz"]}, "worker_ami"),
        ({"instance_types": ["T3.medium"]}, "instance_type"),
        ({"instance_types": ["*.large"]}, "instance_type"),
        ({"instance_types": []}, "instance_type"),
        ({"kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:alias/ebs"}, "kms_key_arn"),
        ({"region": "us-east-1", "kms_key_arn": KEY}, "kms_key_arn"),
    ],
)
def test_bad_inputs_are_refused_by_name(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(BadInput) as bad:
        manager_policy(CLUSTER, **kwargs)
    assert bad.value.name == name


def iam_policy(*args: str) -> Any:
    return CliRunner().invoke(main, ["iam-policy", *args])


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run where no instance_config.json is, so the defaults are the built-in ones."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_iam_policy_command_prints_the_policy(in_empty_dir: Path) -> None:
    result = iam_policy("alpha")
    scoped = iam_policy("alpha", "--region", "us-west-2", "--account", "123456789012")
    every = iam_policy(
        "alpha",
        "--region",
        "eu-west-1",
        "--worker-ami",
        "ami-12345678",
        "--instance-type",
        "t3.large",
        "--instance-type",
        "t3a.*",
        "--kms-key-arn",
        KEY,
    )
    bad = iam_policy("Alpha_1")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == manager_policy("alpha")
    assert json.loads(scoped.stdout) == manager_policy(
        "alpha", region="us-west-2", account="123456789012"
    )
    assert json.loads(every.stdout) == manager_policy(
        "alpha",
        "eu-west-1",
        worker_amis=["ami-12345678"],
        instance_types=["t3.large", "t3a.*"],
        kms_key_arn=KEY,
    )
    assert bad.exit_code == 2 and "Invalid value for 'CLUSTER'" in bad.output


def test_defaults_come_from_the_instance_config(in_empty_dir: Path) -> None:
    """WORKER_INSTANCE_TYPE and CUSTOM_WORKER_AMI, from ./instance_config.json or
    --instance-config, as the launcher reads them; options override them."""
    config = {"WORKER_INSTANCE_TYPE": "m5.large", "CUSTOM_WORKER_AMI": "ami-0123456789abcdef0"}
    (in_empty_dir / "instance_config.json").write_text(json.dumps(config))
    other = in_empty_dir / "other.json"
    other.write_text(json.dumps({"WORKER_INSTANCE_TYPE": "c5.xlarge"}))

    here = iam_policy("alpha")
    named = iam_policy("alpha", "--instance-config", str(other))
    overridden = iam_policy("alpha", "--instance-type", "t3.small", "--worker-ami", "ami-12345678")

    assert json.loads(here.stdout) == manager_policy(
        "alpha", worker_amis=["ami-0123456789abcdef0"], instance_types=["m5.large"]
    )
    assert json.loads(named.stdout) == manager_policy("alpha", instance_types=["c5.xlarge"])
    assert json.loads(overridden.stdout) == manager_policy(
        "alpha", worker_amis=["ami-12345678"], instance_types=["t3.small"]
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--region", ""], "--region: '' is not an AWS region such as us-east-1 (or * for any)"),
        (["--region", "moon-1"], "--region: 'moon-1' is not an AWS region"),
        (["--account", "1234"], "--account: '1234' is not a 12-digit AWS account id"),
        (["--worker-ami", "ami-12345678", "--worker-ami", "ami-1"], "--worker-ami: 'ami-1'"),
        (["--instance-type", "t3 medium"], "--instance-type: 't3 medium' is not an instance type"),
        (["--instance-type", "*.large"], "--instance-type: '*.large' is not an instance type"),
        (["--kms-key-arn", "alias/aws/ebs"], "--kms-key-arn: 'alias/aws/ebs' is not a KMS key ARN"),
        (["--region", "us-east-1", "--kms-key-arn", KEY], "--kms-key-arn: the key is in eu-west-1"),
        (["--instance-config", "missing.json"], "--instance-config: no such file: missing.json"),
    ],
)
def test_bad_options_fail_with_one_line_naming_them(
    in_empty_dir: Path, args: list[str], says: str
) -> None:
    result = iam_policy("alpha", *args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {says}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_a_bad_instance_config_fails_with_one_line(in_empty_dir: Path) -> None:
    (in_empty_dir / "instance_config.json").write_text('{"WORKER_INSTANCE_TYPE": 3}')

    result = iam_policy("alpha")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --instance-config: instance_config.json: field ")
    assert result.stderr.count("\n") == 1


# ---- (b) enforcement by moto's IAM ------------------------------------------------------


def action_level(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy as moto can evaluate it: moto authorises EC2 against resource "*",
    which no ARN pattern matches, so keep actions and conditions and widen Resource."""
    return {**policy, "Statement": [{**s, "Resource": "*"} for s in policy["Statement"]]}


def hub_client(policy: dict[str, Any], extra_actions: tuple[str, ...] = ()) -> Any:
    """An EC2 client whose credentials belong to a moto IAM user holding `policy`."""
    iam = boto3.client("iam", region_name="us-east-1")
    name = f"hub-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    document = action_level(policy)
    if extra_actions:
        extra = {"Effect": "Allow", "Action": list(extra_actions), "Resource": "*"}
        document["Statement"].append(extra)
    iam.put_user_policy(UserName=name, PolicyName="manager", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    ).client("ec2", region_name="us-east-1", config=RETRY_CONFIG)


@pytest.fixture
def cluster_parts(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, network: Any, spec: WorkerSpec, make_untagged: Any
) -> dict[str, Any]:
    """Made with the admin's credentials before IAM is enforced, next to foreign ones."""
    groups = ensure_security_groups(ec2, network.vpc_id)
    running = ec2.launch_worker("bob", spec, f"t-{uuid.uuid4().hex}")
    foreign = other_ec2.launch_worker("bob", spec, f"t-{uuid.uuid4().hex}")
    return {
        "spec": spec,
        "groups": groups,
        "bob": running.id,
        "foreign": [foreign.id, make_untagged()],
    }


def test_hub_credentials_may_run_start_stop_attach_terminate_but_not_delete(
    ec2: LocalCloudEc2, cluster_parts: dict[str, Any]
) -> None:
    hub = LocalCloudEc2(CLUSTER, hub_client(manager_policy(CLUSTER)))
    spec, bob = cluster_parts["spec"], cluster_parts["bob"]

    with enable_iam_authentication():
        assert {i.id for i in hub.describe_workers()} == {bob}  # DescribeInstances
        alice = hub.launch_worker("alice", spec, f"t-{uuid.uuid4().hex}")  # RunInstances
        hub.stop(bob)  # StopInstances
        hub.start(bob)  # StartInstances
        volume = hub.create_home_volume("alice", 1, alice.availability_zone)  # CreateVolume
        hub.attach_volume(volume, alice.id, "/dev/sdf")  # AttachVolume
        hub.console_output(alice.id, alice.instance_type)  # GetConsoleOutput

        # ModifyInstanceAttribute is allowed for a worker's type only; moto checks
        # actions, not the ec2:Attribute/InstanceType condition that says so (see
        # test_policy_modifies_only_a_workers_type_and_never_retags).

        # DeleteVolume only on restored folders (DeleteRestoredFolders): moto checks
        # the action, not the tag condition, so the hub's own guard is what refuses here.
        with pytest.raises(NotOurs):
            hub_restores.delete_restored_folder(hub, volume)

    # moto cannot evaluate the ResourceTag condition; the guard in LocalCloudEc2 refuses first.
    for foreign in cluster_parts["foreign"]:
        with pytest.raises(NotOurs):
            hub.stop(foreign)
    assert {i.state for i in ec2.describe(cluster_parts["foreign"])} == {"running"}
    states = {i.id: i.state for i in ec2.describe([alice.id, bob])}
    assert states == {alice.id: "running", bob: "running"}
    assert ec2.find_home_volume("alice")["Attachments"][0]["InstanceId"] == alice.id
    # Kept when alice's worker is terminated, without ModifyInstanceAttribute.
    [reservation] = ec2.client.describe_instances(InstanceIds=[alice.id])["Reservations"]
    mappings = {
        m["DeviceName"]: m["Ebs"] for m in reservation["Instances"][0]["BlockDeviceMappings"]
    }
    assert mappings["/dev/sdf"]["VolumeId"] == volume
    assert mappings["/dev/sdf"]["DeleteOnTermination"] is False


def test_hub_credentials_may_hibernate_find_home_volumes_and_read_instance_types(
    ec2: LocalCloudEc2, cluster_parts: dict[str, Any]
) -> None:
    hub = LocalCloudEc2(CLUSTER, hub_client(manager_policy(CLUSTER)))
    spec, bob = cluster_parts["spec"], cluster_parts["bob"]
    zone = ec2.describe([bob])[0].availability_zone

    with enable_iam_authentication():
        hub.stop(bob, hibernate=True)  # StopInstances with Hibernate
        hub.start(bob)
        volume = hub.create_home_volume("bob", 1, zone)
        found = hub.find_home_volume("bob")  # DescribeVolumes
        types = hub.client.describe_instance_types(InstanceTypes=[spec.instance_type])

    assert found is not None and found["VolumeId"] == volume
    assert types["InstanceTypes"][0]["InstanceType"] == spec.instance_type


def test_reading_user_data_and_other_describes_is_denied(
    ec2: LocalCloudEc2, cluster_parts: dict[str, Any]
) -> None:
    """No ec2:Describe*: an instance's user data, and reads the hub never makes, are denied."""
    client = hub_client(manager_policy(CLUSTER))
    bob = cluster_parts["bob"]
    reads = {
        "DescribeInstanceAttribute": lambda: client.describe_instance_attribute(
            InstanceId=bob, Attribute="userData"
        ),
        "DescribeSecurityGroups": client.describe_security_groups,
        "DescribeKeyPairs": client.describe_key_pairs,
        "DescribeVpcs": client.describe_vpcs,
    }

    codes = {}
    with enable_iam_authentication():
        for action, read in reads.items():
            with pytest.raises(client.exceptions.ClientError) as denied:
                read()
            codes[action] = denied.value.response["Error"]["Code"]

    assert set(codes.values()) <= DENIED, codes
    # Control: with the old policy's ec2:Describe* the same user reads the user data.
    old = hub_client(manager_policy(CLUSTER), ("ec2:Describe*",))
    with enable_iam_authentication():
        old.describe_instance_attribute(InstanceId=bob, Attribute="userData")


def test_delete_security_group_is_denied(ec2: LocalCloudEc2, cluster_parts: dict[str, Any]) -> None:
    client = hub_client(manager_policy(CLUSTER))
    group = cluster_parts["groups"].manager2

    with enable_iam_authentication(), pytest.raises(client.exceptions.ClientError) as denied:
        client.delete_security_group(GroupId=group)

    assert denied.value.response["Error"]["Code"] in DENIED
    assert group in {g["GroupId"] for g in ec2.client.describe_security_groups()["SecurityGroups"]}


def test_the_denials_come_from_the_policy(
    ec2: LocalCloudEc2, cluster_parts: dict[str, Any]
) -> None:
    """Control: the same user may terminate workers (delete_forever), and with
    delete_home_volumes also delete a home volume."""
    hub = LocalCloudEc2(CLUSTER, hub_client(manager_policy(CLUSTER, delete_home_volumes=True)))
    zone = ec2.describe([cluster_parts["bob"]])[0].availability_zone
    volume = ec2.create_home_volume("bob", 1, zone)

    with enable_iam_authentication():
        hub.terminate_workers([cluster_parts["bob"]])
        hub.delete_home_volume(volume)

    assert ec2.describe([cluster_parts["bob"]])[0].state == "terminated"
    assert ec2.find_home_volume("bob") is None


def test_unknown_credentials_are_refused(ec2: LocalCloudEc2, cluster_parts: dict[str, Any]) -> None:
    """Control: with IAM enforced, the fixtures' fake keys are not accepted at all."""
    with enable_iam_authentication(), pytest.raises(CloudError) as refused:
        ec2.describe_workers()

    assert refused.value.code in {"AuthFailure", "InvalidClientTokenId"}


def test_the_backup_role_snapshots_and_prunes_only_the_clusters_volumes(
    in_empty_dir: Path,
) -> None:
    result = CliRunner().invoke(main, ["iam-policy", "alpha", "--backup-role"])
    assert result.exit_code == 0, result.output
    by_sid = {s["Sid"]: s for s in json.loads(result.output)["Statement"]}
    volumes = by_sid["SnapshotOnlyTheClustersVolumes"]
    assert volumes["Resource"] == VOLUME
    assert volumes["Condition"] == {
        "StringEquals": {"ec2:ResourceTag/cloudjhub:backup": ["alpha/home", "alpha/root"]}
    }
    assert by_sid["PruneOnlyTheClustersSnapshots"]["Condition"] == {"StringEquals": OURS}
    actions = {a for s in by_sid.values() for a in as_list(s["Action"])}
    assert actions == {
        "ec2:CreateSnapshot",
        "ec2:CreateTags",
        "ec2:DeleteSnapshot",
        "ec2:DescribeInstances",
        "ec2:DescribeSnapshots",
        "ec2:DescribeVolumes",
    }
