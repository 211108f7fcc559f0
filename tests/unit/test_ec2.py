"""The EC2 layer against moto in-process: launches, guards, volumes and security groups."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import yaml

from cloudjhub.aws.client import CloudError, Instance, NotOurs, make_client
from cloudjhub.aws.hub import WorkerSpec, launch_token
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.launch.groups import HUB_API_PORT, ensure_security_groups
from cloudjhub.tags import Role, tag_dict, tags_for
from tests.helpers import ApiCalls

CLUSTER = "alpha"  # the `ec2` fixture's cluster; `other_ec2` is "beta"
Network = Any  # conftest.Network: .vpc_id, .subnet_id

MakeWorker = Callable[..., Instance]


def raw_instance(ec2: LocalCloudEc2, instance_id: str) -> dict[str, Any]:
    reply = ec2.client.describe_instances(InstanceIds=[instance_id])
    return reply["Reservations"][0]["Instances"][0]


def state_of(ec2: LocalCloudEc2, instance_id: str) -> str:
    return raw_instance(ec2, instance_id)["State"]["Name"]


def destructive_calls(calls: ApiCalls) -> int:
    return sum(
        calls[op]
        for op in ("StopInstances", "TerminateInstances", "StartInstances", "AttachVolume")
    )


# ---- launch -------------------------------------------------------------------------


def test_launch_worker_sets_tags_imds_profile_shutdown_and_root_size(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    inst = ec2.launch_worker("bob", spec, launch_token(CLUSTER, "bob", None))

    data = raw_instance(ec2, inst.id)
    tags = {t["Key"]: t["Value"] for t in data["Tags"]}
    assert tags == {
        "cloudjhub:cluster": CLUSTER,
        "cloudjhub:user": "bob",
        "cloudjhub:role": "worker",
        "Name": f"{CLUSTER}-worker-bob",
    }
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert not data.get("IamInstanceProfile")
    assert data["ImageId"] == spec.image_id
    assert data["InstanceType"] == "t3.medium"
    assert data["SubnetId"] == spec.subnet_id
    assert data["KeyName"] == spec.key_name
    assert [g["GroupId"] for g in data["SecurityGroups"]] == list(spec.security_group_ids)

    shutdown = ec2.client.describe_instance_attribute(
        InstanceId=inst.id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"

    volumes = ec2.client.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [inst.id]}]
    )["Volumes"]
    assert len(volumes) == 1
    root = volumes[0]
    assert root["Size"] == spec.ebs_size == 20
    assert root["VolumeType"] == "gp3"
    [mapping] = data["BlockDeviceMappings"]
    assert mapping["DeviceName"] == ec2.root_device_name(spec.image_id)
    assert mapping["Ebs"]["VolumeId"] == root["VolumeId"]
    assert mapping["Ebs"]["DeleteOnTermination"] is True
    assert {t["Key"]: t["Value"] for t in root["Tags"]}["cloudjhub:user"] == "bob"
    assert inst.volumes == (root["VolumeId"],)


def test_launch_worker_returns_a_tagged_instance(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    inst = ec2.launch_worker("carol", spec, "token-carol")
    assert inst.id.startswith("i-")
    assert inst.user == "carol"
    assert inst.cluster == CLUSTER
    assert inst.role == "worker"
    assert inst.instance_type == "t3.medium"
    assert inst.private_ip and inst.private_ip.startswith("10.42.1.")
    assert inst.availability_zone.startswith("us-east-1")
    assert inst.state in ("pending", "running")


def test_root_volume_size_follows_the_spec(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    big = WorkerSpec(**{**spec.__dict__, "ebs_size": 123})
    inst = ec2.launch_worker("erin", big, "token-erin")
    sizes = [
        v["Size"]
        for v in ec2.client.describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [inst.id]}]
        )["Volumes"]
    ]
    assert sizes == [123]


def test_root_device_name_is_cached(ec2: LocalCloudEc2, spec: WorkerSpec, calls: ApiCalls) -> None:
    ec2.launch_worker("u1", spec, "t1")
    ec2.launch_worker("u2", spec, "t2")
    assert calls["DescribeImages"] == 1
    assert calls["RunInstances"] == 2


@pytest.mark.parametrize(
    ("image", "code"),
    [
        ("ami-0000000000deadbeef", "InvalidAMIID.NotFound"),
        ("ami-12345678", "InvalidAMIID.NotFound"),
        ("not-an-image", "InvalidAMIID.Malformed"),
    ],
)
def test_invalid_ami_gives_a_user_message_naming_the_image(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    image: str,
    code: str,
    calls: ApiCalls,
) -> None:
    bad = WorkerSpec(**{**spec.__dict__, "image_id": image})
    with pytest.raises(CloudError) as exc:
        ec2.launch_worker("bob", bad, "token-bad")
    assert image in str(exc.value)
    assert "admin" in str(exc.value)
    assert exc.value.code == code
    assert calls["RunInstances"] == 0
    assert ec2.describe_workers() == []


def test_deregistered_image_gives_a_user_message_naming_it(
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    make_worker: MakeWorker,
    calls: ApiCalls,
) -> None:
    """DescribeImages returns no image (and no error) for a deregistered AMI."""
    builder = make_worker("builder")
    image_id = ec2.client.create_image(InstanceId=builder.id, Name="alpha-worker-image")["ImageId"]
    ec2.client.deregister_image(ImageId=image_id)
    assert ec2.client.describe_images(ImageIds=[image_id])["Images"] == []
    calls.clear()

    gone = WorkerSpec(**{**spec.__dict__, "image_id": image_id})
    with pytest.raises(CloudError) as exc:
        ec2.launch_worker("bob", gone, "token-gone")
    assert image_id in str(exc.value)
    assert exc.value.code == "InvalidAMIID.NotFound"
    assert calls["RunInstances"] == 0


def test_unknown_instance_type_is_a_cloud_error(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    bad = WorkerSpec(**{**spec.__dict__, "instance_type": "t9.enormous"})
    with pytest.raises(CloudError) as exc:
        ec2.launch_worker("bob", bad, "token-type")
    assert exc.value.code == "InvalidInstanceType.NotFound"
    assert "t9.enormous" in str(exc.value)


def test_unknown_key_pair_is_a_cloud_error(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    bad = WorkerSpec(**{**spec.__dict__, "key_name": "no-such-key"})
    with pytest.raises(CloudError) as exc:
        ec2.launch_worker("bob", bad, "token-key")
    assert exc.value.code == "InvalidKeyPair.NotFound"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("InsufficientInstanceCapacity", "no spare t3.medium capacity"),
        ("InstanceLimitExceeded", "limit of running instances"),
        ("VcpuLimitExceeded", "vCPU limit for t3.medium"),
    ],
)
def test_capacity_errors_become_user_messages(
    ec2: LocalCloudEc2, spec: WorkerSpec, code: str, expected: str
) -> None:
    class Http:
        status_code = 500
        headers: dict[str, str] = {}

    def fail(**_: Any) -> tuple[Http, dict[str, Any]]:
        return Http(), {"Error": {"Code": code, "Message": "raw AWS text"}}

    ec2.client.meta.events.register("before-call.ec2.RunInstances", fail)
    with pytest.raises(CloudError) as exc:
        ec2.launch_worker("bob", spec, "token-capacity")
    assert exc.value.code == code
    assert expected in str(exc.value)
    assert "raw AWS text" not in str(exc.value)


def test_make_client_uses_region_endpoint_and_adaptive_retries(aws: None) -> None:
    client = make_client("eu-west-1")
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.retries["mode"] == "adaptive"
    local = make_client("us-east-1", "http://127.0.0.1:5999")
    assert local.meta.endpoint_url == "http://127.0.0.1:5999"


def test_launch_token_is_stable_short_and_depends_on_the_previous_instance() -> None:
    first = launch_token("alpha", "bob", None)
    assert first == launch_token("alpha", "bob", None)
    assert first == launch_token("alpha", "bob", "")
    replacement = launch_token("alpha", "bob", "i-0123456789abcdef0")
    other = launch_token("alpha", "bob", "i-0fedcba9876543210")
    assert len({first, replacement, other}) == 3
    assert launch_token("alpha", "carol", None) != first
    assert launch_token("beta", "bob", None) != first
    long_user = "someone.with.a.very.long.name@an-even-longer-domain.example.org" * 3
    for token in (first, replacement, other, launch_token("alpha", long_user, "i-" + "f" * 17)):
        assert len(token) <= 64
        assert token.isascii()


# ---- guard ----------------------------------------------------------------------------


def test_guard_accepts_own_workers(ec2: LocalCloudEc2, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    checked = ec2.guard([b.id, a.id, b.id], [Role.WORKER])
    assert [i.id for i in checked] == [b.id, a.id]


def test_guard_refuses_another_clusters_instance(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, make_worker: MakeWorker, calls: ApiCalls
) -> None:
    theirs = make_worker("bob", other_ec2)
    before = state_of(ec2, theirs.id)
    with pytest.raises(NotOurs, match=theirs.id):
        ec2.stop(theirs.id)
    with pytest.raises(NotOurs, match=theirs.id):
        ec2.terminate([theirs.id])
    with pytest.raises(NotOurs):
        ec2.start(theirs.id)
    assert destructive_calls(calls) == 0
    assert state_of(ec2, theirs.id) == before != "terminated"


def test_guard_refuses_untagged_instances(
    ec2: LocalCloudEc2, make_untagged: Callable[[], str], calls: ApiCalls
) -> None:
    stranger = make_untagged()
    with pytest.raises(NotOurs, match=stranger):
        ec2.terminate([stranger])
    with pytest.raises(NotOurs, match=stranger):
        ec2.stop(stranger, hibernate=True)
    assert calls["TerminateInstances"] == 0
    assert calls["StopInstances"] == 0
    assert state_of(ec2, stranger) == "running"


def test_one_foreign_id_refuses_the_whole_batch(
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    make_worker: MakeWorker,
    make_untagged: Callable[[], str],
    calls: ApiCalls,
) -> None:
    mine = [make_worker("a"), make_worker("b")]
    theirs = make_worker("c", other_ec2)
    stranger = make_untagged()
    with pytest.raises(NotOurs) as exc:
        ec2.terminate([mine[0].id, theirs.id, mine[1].id, stranger])
    assert theirs.id in str(exc.value) and stranger in str(exc.value)
    assert mine[0].id not in str(exc.value)
    assert calls["TerminateInstances"] == 0
    assert {state_of(ec2, i.id) for i in mine} == {"running"}


def test_guard_checks_the_role(
    ec2: LocalCloudEc2, spec: WorkerSpec, network: Network, calls: ApiCalls
) -> None:
    manager = ec2.run_instance(
        spec.image_id,
        "t3.small",
        network.subnet_id,
        list(spec.security_group_ids),
        spec.key_name,
        tags_for(CLUSTER, Role.MANAGER),
    )
    with pytest.raises(NotOurs, match="role worker"):
        ec2.terminate([manager.id])
    with pytest.raises(NotOurs):
        ec2.stop(manager.id)
    assert destructive_calls(calls) == 0
    assert ec2.terminate([manager.id], roles=[Role.MANAGER]) == [manager.id]
    assert calls["TerminateInstances"] == 1


def test_terminate_with_no_ids_refuses_without_calling_ec2(
    ec2: LocalCloudEc2, calls: ApiCalls
) -> None:
    with pytest.raises(NotOurs, match="no explicit instance ids"):
        ec2.terminate([])
    with pytest.raises(NotOurs):
        ec2.terminate(iter(()))
    assert sum(calls.values()) == 0


def test_guard_refuses_unknown_ids(ec2: LocalCloudEc2, calls: ApiCalls) -> None:
    with pytest.raises(CloudError):
        ec2.terminate(["i-0123456789abcdef0"])
    assert calls["TerminateInstances"] == 0


def test_terminate_and_stop_own_workers(
    ec2: LocalCloudEc2, make_worker: MakeWorker, calls: ApiCalls
) -> None:
    a, b, c = make_worker("a"), make_worker("b"), make_worker("c")
    ec2.stop(c.id)
    assert calls["StopInstances"] == 1
    assert state_of(ec2, c.id) in ("stopping", "stopped")
    assert ec2.terminate([a.id, b.id]) == [a.id, b.id]
    assert calls["TerminateInstances"] == 1
    assert {state_of(ec2, a.id), state_of(ec2, b.id)} <= {"shutting-down", "terminated"}


# ---- describe -------------------------------------------------------------------------


def test_describe_workers_paginates_and_filters(
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    make_worker: MakeWorker,
    make_untagged: Callable[[], str],
    spec: WorkerSpec,
    network: Network,
    calls: ApiCalls,
) -> None:
    ours = {make_worker(f"user{i}").id for i in range(7)}
    theirs = {make_worker(f"user{i}", other_ec2).id for i in range(3)}
    stranger = make_untagged()
    manager = ec2.run_instance(
        spec.image_id,
        "t3.small",
        network.subnet_id,
        [],
        spec.key_name,
        tags_for(CLUSTER, Role.MANAGER),
    ).id

    # Force small pages so the NextToken loop must run.
    def small_pages(params: dict[str, Any], **_: Any) -> None:
        if "MaxResults" in params:
            params["MaxResults"] = 5

    ec2.client.meta.events.register("provide-client-params.ec2.DescribeInstances", small_pages)
    calls.clear()

    workers = ec2.describe_workers()
    assert {i.id for i in workers} == ours
    assert len(workers) == 7
    assert calls["DescribeInstances"] >= 2
    assert all(i.cluster == CLUSTER and i.role == "worker" for i in workers)

    mine = ec2.describe_workers(user="user3")
    assert len(mine) == 1 and mine[0].user == "user3" and mine[0].id in ours

    cluster = {i.id for i in ec2.describe_cluster()}
    assert cluster == ours | {manager}
    assert {i.id for i in ec2.describe_cluster(Role.MANAGER)} == {manager}
    assert {i.id for i in other_ec2.describe_workers()} == theirs
    assert stranger not in cluster | theirs


def test_describe_by_ids(ec2: LocalCloudEc2, make_worker: MakeWorker) -> None:
    a, b = make_worker("a"), make_worker("b")
    assert {i.id for i in ec2.describe([a.id, b.id])} == {a.id, b.id}
    assert ec2.describe([]) == []


# ---- home volumes ---------------------------------------------------------------------


# Hub usernames that are EC2 filter wildcards (or look like them) must match only
# themselves: a user named "*" once got alice@example.com's home volume.
WILDCARD_NAMES = ["*", "alice*", "?lice@example.com", "alice@example.co?", "[a]lice@example.com"]


@pytest.mark.parametrize("name", WILDCARD_NAMES)
def test_a_wildcard_username_never_finds_another_users_volume_or_worker(
    ec2: LocalCloudEc2, make_worker: MakeWorker, name: str
) -> None:
    alice = make_worker("alice@example.com")
    volume_id = ec2.create_home_volume("alice@example.com", 5, alice.availability_zone)

    assert ec2.find_home_volume(name) is None
    assert ec2.describe_workers(name) == []
    # The real owner still finds hers, and the odd name finds its own.
    assert ec2.find_home_volume("alice@example.com")["VolumeId"] == volume_id  # type: ignore[index]
    assert [i.id for i in ec2.describe_workers("alice@example.com")] == [alice.id]
    own = ec2.create_home_volume(name, 5, alice.availability_zone)
    theirs = make_worker(name)
    assert ec2.find_home_volume(name)["VolumeId"] == own  # type: ignore[index]
    assert [i.id for i in ec2.describe_workers(name)] == [theirs.id]


def test_home_volume_create_find_attach(
    ec2: LocalCloudEc2, make_worker: MakeWorker, calls: ApiCalls
) -> None:
    inst = make_worker("dana")
    assert ec2.find_home_volume("dana") is None

    volume_id = ec2.create_home_volume("dana", 5, inst.availability_zone)
    found = ec2.find_home_volume("dana")
    assert found is not None and found["VolumeId"] == volume_id
    assert found["Size"] == 5
    assert found["Encrypted"] is True
    assert found["AvailabilityZone"] == inst.availability_zone
    tags = {t["Key"]: t["Value"] for t in found["Tags"]}
    assert tags["cloudjhub:role"] == "home"
    assert tags["cloudjhub:user"] == "dana"
    assert tags["cloudjhub:cluster"] == CLUSTER
    assert ec2.find_home_volume("someone-else") is None

    ec2.attach_volume(volume_id, inst.id, "/dev/sdf")
    # AttachVolume alone keeps the volume on termination: no ModifyInstanceAttribute
    # (which the hub's IAM role does not have).
    assert calls["AttachVolume"] == 1
    assert calls["ModifyInstanceAttribute"] == 0
    mappings = {
        m["DeviceName"]: m["Ebs"] for m in raw_instance(ec2, inst.id)["BlockDeviceMappings"]
    }
    assert mappings["/dev/sdf"]["VolumeId"] == volume_id
    assert mappings["/dev/sdf"]["DeleteOnTermination"] is False
    # The root volume still goes with the instance.
    root = next(d for d in mappings if d != "/dev/sdf")
    assert mappings[root]["DeleteOnTermination"] is True
    vol = ec2.client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    [attachment] = vol["Attachments"]
    assert attachment["InstanceId"] == inst.id
    assert attachment.get("DeleteOnTermination", False) is False  # moto leaves it out
    # And the home volume outlives its worker.
    ec2.terminate([inst.id])
    vol = ec2.client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert vol["State"] == "available" and vol["Attachments"] == []


def test_home_volume_lookup_is_per_cluster(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, make_worker: MakeWorker
) -> None:
    inst = make_worker("dana")
    theirs = other_ec2.create_home_volume("dana", 5, inst.availability_zone)
    assert ec2.find_home_volume("dana") is None
    found = other_ec2.find_home_volume("dana")
    assert found is not None and found["VolumeId"] == theirs


def test_attach_refuses_another_clusters_instance(
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    make_worker: MakeWorker,
    calls: ApiCalls,
) -> None:
    theirs = make_worker("dana", other_ec2)
    volume_id = ec2.create_home_volume("dana", 5, theirs.availability_zone)
    with pytest.raises(NotOurs):
        ec2.attach_volume(volume_id, theirs.id, "/dev/sdf")
    assert calls["AttachVolume"] == 0
    assert calls["ModifyInstanceAttribute"] == 0
    vol = ec2.client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert vol["Attachments"] == []


# ---- security groups ------------------------------------------------------------------


def rules(ec2: LocalCloudEc2, group_id: str) -> list[dict[str, Any]]:
    group = ec2.client.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return group["IpPermissions"]


def ports_from_cidr(ec2: LocalCloudEc2, group_id: str) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for perm in rules(ec2, group_id):
        for r in perm.get("IpRanges", []):
            out.setdefault(perm["FromPort"], set()).add(r["CidrIp"])
    return out


def ports_from_groups(ec2: LocalCloudEc2, group_id: str) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for perm in rules(ec2, group_id):
        for pair in perm.get("UserIdGroupPairs", []):
            out.setdefault(perm["FromPort"], set()).add(pair["GroupId"])
    return out


def test_security_groups_with_admin_cidr(ec2: LocalCloudEc2, network: Network) -> None:
    groups = ensure_security_groups(ec2, network.vpc_id, admin_cidr="203.0.113.0/24")
    assert len({groups.manager, groups.manager2, groups.worker}) == 3
    assert set(groups.created) == {groups.manager, groups.manager2, groups.worker}

    # Only the hub's port is public: nothing serves 443 on the manager.
    assert ports_from_cidr(ec2, groups.manager) == {
        80: {"0.0.0.0/0"},
        22: {"203.0.113.0/24"},
    }
    assert ports_from_groups(ec2, groups.manager) == {}

    assert ports_from_cidr(ec2, groups.worker) == {}
    assert ports_from_groups(ec2, groups.worker) == {
        22: {groups.manager},
        8888: {groups.manager},
    }
    assert all(p["IpProtocol"] == "tcp" for p in rules(ec2, groups.worker))

    assert HUB_API_PORT == 8081
    assert ports_from_cidr(ec2, groups.manager2) == {}
    assert ports_from_groups(ec2, groups.manager2) == {8081: {groups.worker}}

    described = ec2.client.describe_security_groups(
        GroupIds=[groups.manager, groups.manager2, groups.worker]
    )["SecurityGroups"]
    by_id = {g["GroupId"]: g for g in described}
    assert by_id[groups.manager]["GroupName"] == f"{CLUSTER}-manager"
    assert by_id[groups.worker]["GroupName"] == f"{CLUSTER}-worker"
    assert all(g["VpcId"] == network.vpc_id for g in described)
    worker_tags = {t["Key"]: t["Value"] for t in by_id[groups.worker]["Tags"]}
    assert worker_tags["cloudjhub:cluster"] == CLUSTER


def test_security_groups_without_admin_cidr_have_no_ssh(
    ec2: LocalCloudEc2, network: Network
) -> None:
    groups = ensure_security_groups(ec2, network.vpc_id)
    assert ports_from_cidr(ec2, groups.manager) == {80: {"0.0.0.0/0"}}
    assert 22 not in ports_from_groups(ec2, groups.manager)


def test_security_groups_custom_ports(ec2: LocalCloudEc2, network: Network) -> None:
    groups = ensure_security_groups(
        ec2,
        network.vpc_id,
        "198.51.100.0/24",
        notebook_port=9999,
        ssh_port=2222,
        public_ports=(8000,),
    )
    assert ports_from_groups(ec2, groups.worker) == {
        2222: {groups.manager},
        9999: {groups.manager},
    }
    assert ports_from_cidr(ec2, groups.manager) == {
        8000: {"0.0.0.0/0"},
        2222: {"198.51.100.0/24"},
    }


def test_a_same_named_group_of_someone_else_is_refused(
    ec2: LocalCloudEc2, network: Network
) -> None:
    """Adding our rules to an untagged group that merely has our name would open it."""
    foreign = ec2.client.create_security_group(
        GroupName=f"{CLUSTER}-manager", Description="not ours", VpcId=network.vpc_id
    )["GroupId"]
    with pytest.raises(NotOurs, match="not tagged"):
        ensure_security_groups(ec2, network.vpc_id)
    assert rules(ec2, foreign) == []


def test_security_groups_are_idempotent(
    ec2: LocalCloudEc2, network: Network, calls: ApiCalls
) -> None:
    first = ensure_security_groups(ec2, network.vpc_id, admin_cidr="203.0.113.0/24")
    before = {g: rules(ec2, g) for g in (first.manager, first.manager2, first.worker)}
    second = ensure_security_groups(ec2, network.vpc_id, admin_cidr="203.0.113.0/24")
    assert (second.manager, second.manager2, second.worker) == (
        first.manager,
        first.manager2,
        first.worker,
    )
    assert second.created == ()
    assert {g: rules(ec2, g) for g in before} == before
    assert calls["CreateSecurityGroup"] == 3


def test_rerun_with_admin_cidr_adds_ssh(ec2: LocalCloudEc2, network: Network) -> None:
    """A re-run that adds the admin CIDR must open 22 even though 80 already exists."""
    first = ensure_security_groups(ec2, network.vpc_id)
    ensure_security_groups(ec2, network.vpc_id, admin_cidr="198.51.100.7/32")
    assert ports_from_cidr(ec2, first.manager)[22] == {"198.51.100.7/32"}


def test_security_groups_are_per_cluster(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, network: Network
) -> None:
    ours = ensure_security_groups(ec2, network.vpc_id)
    theirs = ensure_security_groups(other_ec2, network.vpc_id)
    assert {ours.manager, ours.manager2, ours.worker}.isdisjoint(
        {theirs.manager, theirs.manager2, theirs.worker}
    )
    assert ports_from_groups(ec2, theirs.worker)[22] == {theirs.manager}
    assert other_ec2.cluster != ec2.cluster


def test_other_authorize_errors_are_raised(ec2: LocalCloudEc2) -> None:
    with pytest.raises(CloudError) as exc:
        ec2.authorize_ingress(
            "sg-0123456789abcdef0",
            [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 1,
                    "ToPort": 1,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
        )
    assert exc.value.code == "InvalidGroup.NotFound"


# ---- console output ------------------------------------------------------------------


@pytest.mark.parametrize(("instance_type", "latest"), [("t3.medium", True), ("t2.micro", None)])
def test_console_output_asks_for_the_latest_only_on_nitro(
    ec2: LocalCloudEc2, spec: WorkerSpec, calls: ApiCalls, instance_type: str, latest: bool | None
) -> None:
    """Nitro types post buffered console output only around state changes, minutes
    after boot; Latest=True (Nitro only) shows cloud-init's host keys at once."""
    sent: list[dict[str, Any]] = []
    ec2.client.meta.events.register(
        "provide-client-params.ec2.GetConsoleOutput", lambda params, **_: sent.append(params)
    )
    inst = ec2.launch_worker(
        "carl", WorkerSpec(**{**spec.__dict__, "instance_type": instance_type}), "t-console"
    )
    ec2.console_output(inst.id, inst.instance_type)
    ec2.console_output(inst.id, inst.instance_type)

    assert [p.get("Latest") for p in sent] == [latest, latest]
    assert calls["DescribeInstanceTypes"] == 1  # the hypervisor is learned once per type


def test_worker_launch_sends_encrypted_only_when_true_and_the_no_sudo_cloud_config(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    sent: list[dict[str, Any]] = []
    ec2.client.meta.events.register(
        "provide-client-params.ec2.RunInstances",
        lambda params, **_: sent.append(copy.deepcopy(params)),
    )
    plain = ec2.launch_worker("bob", spec, "t-plain")
    ec2.launch_worker("carol", replace(spec, hibernate=True, ebs_size=12), "t-hibernating")

    [plain_ebs, hibernating_ebs] = [p["BlockDeviceMappings"][0]["Ebs"] for p in sent]
    assert "Encrypted" not in plain_ebs  # the account's default applies
    assert hibernating_ebs["Encrypted"] is True
    # cloud-init's default user (the manager's worker key logs in as it) gets no
    # sudo rule and no groups such as lxd, on any image, custom ones too.
    for params in sent:
        config = yaml.safe_load(params["UserData"])
        assert params["UserData"].startswith("#cloud-config\n")
        assert config["system_info"]["default_user"] == {"sudo": None, "groups": []}
    user_data = ec2.client.describe_instance_attribute(InstanceId=plain.id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == sent[0]["UserData"]


# ---- users bound to a stable id ----------------------------------------------------------


def test_a_reused_name_never_claims_a_deleted_users_worker_or_home(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    """What is marked as a deleted user's is invisible to a new user of the same name;
    a resource with no id tag (legacy) or another id without the mark (the hub lost
    its database) is the name's user's, and binding retags it with their id."""
    old = ec2.launch_worker("bob", spec, "t-old", user_id="1-old")
    old_home = ec2.create_home_volume("bob", 5, old.availability_zone, user_id="1-old")
    assert old.tags["cloudjhub:user-id"] == "1-old"
    ec2.mark_deleted([old.id, old_home], "1-old", "2026-11-30T04:00:00Z")

    assert ec2.user_workers("bob") == []
    assert ec2.find_home_volume("bob") is None
    assert [v["VolumeId"] for v in ec2.home_volumes("bob", include_deleted=True)] == [old_home]

    legacy = ec2.launch_worker("carol", spec, "t-legacy")
    legacy_home = ec2.create_home_volume("carol", 5, legacy.availability_zone)
    assert [i.id for i in ec2.user_workers("carol")] == [legacy.id]
    found = ec2.find_home_volume("carol")
    assert found is not None and found["VolumeId"] == legacy_home
    ec2.adopt(legacy.id, legacy.tags, "7-x")
    ec2.adopt(legacy_home, tag_dict(found.get("Tags")), "7-x")
    assert ec2.describe([legacy.id])[0].tags["cloudjhub:user-id"] == "7-x"
    # A lost database: the same name under a new id keeps its worker, re-bound.
    [again] = ec2.user_workers("carol")
    ec2.adopt(again.id, again.tags, "8-y")
    assert ec2.describe([legacy.id])[0].tags["cloudjhub:user-id"] == "8-y"
    # Binding to the id already there makes no call.
    before = ec2.describe([legacy.id])[0]
    ec2.adopt(before.id, before.tags, "8-y")
    assert ec2.describe([legacy.id])[0].tags == before.tags


def test_launch_token_differs_for_a_new_user_of_the_same_name() -> None:
    assert launch_token("alpha", "bob", None, "1-a") != launch_token("alpha", "bob", None, "1-b")
    assert launch_token("alpha", "bob", None, "") == launch_token("alpha", "bob", None)


def test_terminate_workers_and_delete_home_volume_are_guarded(
    ec2: LocalCloudEc2, other_ec2: LocalCloudEc2, spec: WorkerSpec, calls: ApiCalls
) -> None:
    theirs = other_ec2.launch_worker("dana", spec, "t-theirs")
    their_home = other_ec2.create_home_volume("dana", 5, theirs.availability_zone)
    with pytest.raises(NotOurs):
        ec2.terminate_workers([theirs.id])
    with pytest.raises(NotOurs):
        ec2.delete_home_volume(their_home)
    assert calls["TerminateInstances"] == 0 and calls["DeleteVolume"] == 0
