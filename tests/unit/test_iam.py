"""The manager role's IAM policy: its exact structure, and what moto's IAM enforces of it.

moto evaluates IAM at the action level only: EC2 requests are authorised
against resource "*", and a Condition passes when the request carries no value
for its key. So (a) asserts every statement, condition key and value exactly,
and (b) runs the real `LocalCloudEc2` calls of a hub with credentials holding the policy's
actions, to show what is allowed and that terminate and delete are denied.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto.core import enable_iam_authentication

from cloudjhub.aws.client import RETRY_CONFIG, CloudError, NotOurs
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.launch.groups import ensure_security_groups
from cloudjhub.launch.iam import manager_policy

CLUSTER = "alpha"
INSTANCE = "arn:aws:ec2:*:*:instance/*"
VOLUME = "arn:aws:ec2:*:*:volume/*"
OURS = {"ec2:ResourceTag/cloudjhub:cluster": "alpha"}
WORKER_TAGGED = {"StringEquals": {**OURS, "ec2:ResourceTag/cloudjhub:role": "worker"}}
HOME_TAGGED = {"StringEquals": {**OURS, "ec2:ResourceTag/cloudjhub:role": "home"}}
REQUEST_WORKER = {
    "aws:RequestTag/cloudjhub:cluster": "alpha",
    "aws:RequestTag/cloudjhub:role": "worker",
}
DENIED = {"AccessDenied", "UnauthorizedOperation"}


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


# ---- (a) structure ------------------------------------------------------------------


def test_policy_statements_exactly() -> None:
    policy = manager_policy(CLUSTER)

    assert policy["Version"] == "2012-10-17"
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert len(by_sid) == len(policy["Statement"]) == 10
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    expected: dict[str, tuple[Any, Any, Any]] = {  # Sid: (Action, Resource, Condition)
        "ReadInstancesAndConsole": (["ec2:Describe*", "ec2:GetConsoleOutput"], "*", None),
        "RunOnlyClusterWorkersWithImdsv2": (
            "ec2:RunInstances",
            INSTANCE,
            {"StringEquals": {**REQUEST_WORKER, "ec2:MetadataHttpTokens": "required"}},
        ),
        "RunOnlyClusterWorkerVolumes": (
            "ec2:RunInstances",
            VOLUME,
            {"StringEquals": REQUEST_WORKER},
        ),
        "RunWithImageSubnetKey": (
            "ec2:RunInstances",
            [
                "arn:aws:ec2:*::image/*",
                "arn:aws:ec2:*:*:subnet/*",
                "arn:aws:ec2:*:*:key-pair/*",
                "arn:aws:ec2:*:*:network-interface/*",
            ],
            None,
        ),
        "RunInClusterSecurityGroups": (
            "ec2:RunInstances",
            "arn:aws:ec2:*:*:security-group/*",
            {"StringEquals": OURS},
        ),
        "StartStopClusterWorkers": (
            ["ec2:StartInstances", "ec2:StopInstances"],
            INSTANCE,
            WORKER_TAGGED,
        ),
        "TagAtCreation": (
            "ec2:CreateTags",
            [INSTANCE, VOLUME],
            {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateVolume"]}},
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
    }
    assert set(by_sid) == set(expected)
    for sid, (action, resource, condition) in expected.items():
        statement = by_sid[sid]
        assert statement["Action"] == action, sid
        assert statement["Resource"] == resource, sid
        assert statement.get("Condition") == condition, sid
        allowed = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert not allowed, f"{sid} has {allowed}"


def test_policy_never_allows_terminating_or_deleting() -> None:
    actions = {a for s in manager_policy(CLUSTER)["Statement"] for a in as_list(s["Action"])}
    assert not [a for a in actions if a == "*" or a.startswith(("ec2:*", "ec2:Terminate"))]
    assert not [a for a in actions if "Delete" in a or "Deregister" in a or "Revoke" in a]


def test_policy_never_allows_modify_instance_attribute_or_retagging() -> None:
    """No ModifyInstanceAttribute, and CreateTags only while creating: the role cannot
    rewrite the cloudjhub:user/role tags of an existing resource, which the guards trust."""
    for cluster in ("alpha", "beta-2"):
        statements = manager_policy(cluster)["Statement"]
        for statement in statements:
            actions = as_list(statement["Action"])
            assert not [a for a in actions if a.startswith("ec2:Modify")], statement["Sid"]
            assert not [a for a in actions if a.endswith("*") and a != "ec2:Describe*"]
        tagging = [s for s in statements if "ec2:CreateTags" in as_list(s["Action"])]
        assert len(tagging) == 1
        assert tagging[0]["Condition"] == {
            "StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateVolume"]}
        }


def test_existing_instances_are_touched_only_if_tagged_worker() -> None:
    """Start, stop and attach need cloudjhub:role=worker on the instance, so the hub's
    role cannot stop or change the manager (or a builder) of its own cluster."""
    for cluster in ("alpha", "beta-2"):
        for statement in manager_policy(cluster)["Statement"]:
            if statement["Sid"] == "ReadInstancesAndConsole":
                continue
            if INSTANCE not in as_list(statement["Resource"]):
                continue
            values = statement["Condition"]["StringEquals"]
            if "ec2:CreateAction" in values:
                continue
            tag = (
                "aws:RequestTag" if statement["Action"] == "ec2:RunInstances" else "ec2:ResourceTag"
            )
            assert values[f"{tag}/cloudjhub:cluster"] == cluster, statement["Sid"]
            assert values[f"{tag}/cloudjhub:role"] == "worker", statement["Sid"]


def test_every_change_needs_the_cluster_tag_of_that_cluster() -> None:
    """Each action on instances, volumes or groups except Describe/console is tag-conditioned."""
    for cluster in ("alpha", "beta-2"):
        for statement in manager_policy(cluster)["Statement"]:
            resources = as_list(statement["Resource"])
            if statement["Sid"] in ("ReadInstancesAndConsole", "RunWithImageSubnetKey"):
                assert not {INSTANCE, VOLUME, "arn:aws:ec2:*:*:security-group/*"} & set(resources)
                continue
            values = statement["Condition"]["StringEquals"]
            assert cluster in values.values() or set(values) == {"ec2:CreateAction"}


def test_region_scopes_the_arns() -> None:
    policy = json.dumps(manager_policy(CLUSTER, region="eu-west-1"))
    assert "arn:aws:ec2:eu-west-1:*:instance/*" in policy
    assert "arn:aws:ec2:eu-west-1::image/*" in policy
    assert "ec2:*:" not in policy


def test_iam_policy_command_prints_the_policy() -> None:
    result = CliRunner().invoke(main, ["iam-policy", "alpha"])
    scoped = CliRunner().invoke(main, ["iam-policy", "alpha", "--region", "us-west-2"])
    bad = CliRunner().invoke(main, ["iam-policy", "Alpha_1"])

    assert result.exit_code == 0
    assert json.loads(result.output) == manager_policy("alpha")
    assert json.loads(scoped.output) == manager_policy("alpha", region="us-west-2")
    assert bad.exit_code == 2 and "Invalid value for 'CLUSTER'" in bad.output


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


def test_hub_credentials_may_run_start_stop_and_attach_but_not_terminate(
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

        with pytest.raises(hub.client.exceptions.ClientError) as modify:
            hub.client.modify_instance_attribute(
                InstanceId=alice.id,
                BlockDeviceMappings=[
                    {"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}
                ],
            )

        with pytest.raises(CloudError) as terminate:
            hub.terminate([alice.id])  # the guard's describe passes; TerminateInstances does not

    assert terminate.value.code in DENIED, terminate.value
    assert modify.value.response["Error"]["Code"] in DENIED
    # moto cannot evaluate the ResourceTag condition; the guard in LocalCloudEc2 refuses first.
    for foreign in cluster_parts["foreign"]:
        with pytest.raises(NotOurs):
            hub.stop(foreign)
    assert {i.state for i in ec2.describe(cluster_parts["foreign"])} == {"running"}
    assert "ec2:TerminateInstances" in str(terminate.value)
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
    """Control: the same user with TerminateInstances added may terminate."""
    hub = LocalCloudEc2(CLUSTER, hub_client(manager_policy(CLUSTER), ("ec2:TerminateInstances",)))

    with enable_iam_authentication():
        hub.terminate([cluster_parts["bob"]])

    assert ec2.describe([cluster_parts["bob"]])[0].state == "terminated"


def test_unknown_credentials_are_refused(ec2: LocalCloudEc2, cluster_parts: dict[str, Any]) -> None:
    """Control: with IAM enforced, the fixtures' fake keys are not accepted at all."""
    with enable_iam_authentication(), pytest.raises(CloudError) as refused:
        ec2.describe_workers()

    assert refused.value.code in {"AuthFailure", "InvalidClientTokenId"}
