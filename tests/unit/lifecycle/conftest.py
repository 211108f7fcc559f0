"""Shared by the lifecycle command tests (status, terminate-workers, destroy).

status, terminate-workers and destroy against moto, always among foreign resources.

Every test builds cluster `alpha` next to cluster `beta` (same user names) and
untagged look-alikes (an instance named like an alpha worker, groups named
like alpha's in another VPC, a volume, a key pair, an image). The full
inventory of everything the command may not touch is compared before and
after. moto never refuses a security-group delete, so the CLI's client gets
AWS's DependencyViolation rule back: a group still used by an instance or
named in another group's rule cannot be deleted.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner, Result

from cloudjhub.aws import client as ec2_module
from cloudjhub.aws.client import RETRY_CONFIG
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.launch import teardown
from cloudjhub.launch.groups import ClusterGroups, ensure_security_groups
from cloudjhub.launch.image import build_worker_image
from cloudjhub.tags import CLUSTER_TAG, ROLE_TAG, USER_TAG, Role, tag_list, tags_for
from tests.unit.conftest import REGION, SshKey

ROOT = Path(__file__).resolve().parents[3]
SHIM = ROOT / "scripts" / "terminate_all_workers"
ALIVE = ("pending", "running", "stopping", "stopped", "shutting-down")
Inventory = dict[str, dict[str, Any]]


# ---- building clusters --------------------------------------------------------------


@dataclass
class Built:
    cluster: str
    manager: str
    workers: dict[str, str]  # user -> instance id
    groups: ClusterGroups
    image: str
    snapshots: list[str]
    homes: dict[str, str]  # user -> home volume id
    key_pair: str
    instances: set[str] = field(default_factory=set)  # every instance tagged for it
    roots: dict[str, set[str]] = field(default_factory=dict)  # instance -> its other volumes

    @property
    def root_volumes(self) -> set[str]:
        return {v for vs in self.roots.values() for v in vs}

    def all_ids(self, homes: bool) -> set[str]:
        groups = {self.groups.manager, self.groups.manager2, self.groups.worker}
        ids = self.instances | self.root_volumes | groups | {self.image, self.key_pair}
        return ids | set(self.snapshots) | (set(self.homes.values()) if homes else set())

    def worker_ids(self, homes: bool) -> set[str]:
        roots = {v for w in self.workers.values() for v in self.roots.get(w, set())}
        return set(self.workers.values()) | roots | (set(self.homes.values()) if homes else set())


def build_cluster(
    ec2: LocalCloudEc2,
    vpc_id: str,
    subnet_id: str,
    base_ami: str,
    public_key: str,
    users: list[str],
) -> Built:
    """A cluster made with the launcher's own helpers: groups, image, key, workers, manager."""
    cluster = ec2.cluster
    groups = ensure_security_groups(ec2, vpc_id, admin_cidr="10.0.0.0/8")
    key = f"{cluster}-workers"
    ec2.import_key_pair(key, public_key, {CLUSTER_TAG: cluster, "Name": key})
    image = build_worker_image(
        ec2, base_ami, "t3.micro", subnet_id, [groups.worker], key, progress=lambda _m: None, poll=0
    )
    snapshots = ec2.tag_image_snapshots(image, tags_for(cluster, Role.IMAGE))
    spec = WorkerSpec(image, "t3.medium", subnet_id, (groups.worker,), key, 8)
    workers = {u: ec2.launch_worker(u, spec, f"t-{uuid.uuid4().hex}") for u in users}
    ec2.stop(workers[users[-1]].id)
    first = workers[users[0]]
    homes = {users[0]: ec2.create_home_volume(users[0], 1, first.availability_zone)}
    ec2.attach_volume(homes[users[0]], first.id, "/dev/sdf")
    homes["dave"] = ec2.create_home_volume("dave", 1, first.availability_zone)  # detached
    manager = ec2.run_instance(
        base_ami,
        "t3.micro",
        subnet_id,
        [groups.manager, groups.manager2],
        key,
        tags_for(cluster, Role.MANAGER),
    )
    built = Built(
        cluster,
        manager.id,
        {u: w.id for u, w in workers.items()},
        groups,
        image,
        snapshots,
        homes,
        key,
    )
    tagged = ec2.client.describe_instances(
        Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]}]
    )
    built.instances = {i["InstanceId"] for r in tagged["Reservations"] for i in r["Instances"]}
    for volume in ec2.client.describe_volumes()["Volumes"]:
        for att in volume.get("Attachments", []):
            if att["InstanceId"] in built.instances and volume["VolumeId"] not in homes.values():
                built.roots.setdefault(att["InstanceId"], set()).add(volume["VolumeId"])
    return built


@dataclass
class World:
    alpha: Built
    beta: Built
    untagged_instances: list[str]
    lookalike_groups: list[str]
    ec2: LocalCloudEc2


@pytest.fixture
def world(
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    network: Any,
    key_name: str,
    worker_ami: str,
    ssh_key: SshKey,
) -> World:
    """alpha and beta (both with users alice, bob, carol) and untagged look-alikes."""
    client = ec2.client
    users = ["alice", "bob", "carol"]
    alpha = build_cluster(ec2, network.vpc_id, network.subnet_id, worker_ami, ssh_key.public, users)
    beta_tags = {CLUSTER_TAG: "beta", "Name": "beta-net"}
    beta_vpc = other_ec2.ensure_vpc("10.43.0.0/16", beta_tags)
    beta_subnet = other_ec2.ensure_subnet(beta_vpc, "10.43.1.0/24", beta_tags)
    beta = build_cluster(other_ec2, beta_vpc, beta_subnet, worker_ami, ssh_key.public, users)

    # Untagged: a VPC with groups named like alpha's, an instance named and
    # role/user-tagged like an alpha worker (but no cluster tag), a plain one,
    # a volume, a key pair, and an image with its snapshot.
    other_vpc = client.create_vpc(CidrBlock="10.44.0.0/16")["Vpc"]["VpcId"]
    lookalikes = [
        client.create_security_group(
            GroupName=f"alpha-{suffix}", Description="not cloudjhub's", VpcId=other_vpc
        )["GroupId"]
        for suffix in ("manager", "worker")
    ]
    client.authorize_security_group_ingress(
        GroupId=lookalikes[0],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "UserIdGroupPairs": [{"GroupId": lookalikes[1]}],
            }
        ],
    )
    untagged = []
    for tags in ({"Name": "alpha-worker-eve", USER_TAG: "eve", ROLE_TAG: "worker"}, None):
        reply = client.run_instances(
            ImageId=worker_ami,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            SubnetId=network.subnet_id,
            KeyName=key_name,
            **(
                {"TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(tags)}]}
                if tags
                else {}
            ),
        )
        untagged.append(reply["Instances"][0]["InstanceId"])
    client.create_volume(AvailabilityZone=f"{REGION}a", Size=1)
    client.import_key_pair(KeyName="stray", PublicKeyMaterial=ssh_key.public.encode())
    client.create_image(InstanceId=untagged[1], Name="someone-elses-image")
    return World(alpha, beta, untagged, lookalikes, ec2)


def inventory(client: Any) -> Inventory:
    """Everything in the account, with the state that a command could change."""
    instances = {
        i["InstanceId"]: i["State"]["Name"]
        for r in client.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    groups = {
        g["GroupId"]: (g["GroupName"], json.dumps(g["IpPermissions"], sort_keys=True))
        for g in client.describe_security_groups()["SecurityGroups"]
    }
    volumes = {
        v["VolumeId"]: (v["State"], tuple(a["InstanceId"] for a in v.get("Attachments", [])))
        for v in client.describe_volumes()["Volumes"]
    }
    images = {i["ImageId"]: i["State"] for i in client.describe_images(Owners=["self"])["Images"]}
    snapshots = {
        s["SnapshotId"]: s["State"]
        for s in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    }
    keys = {k["KeyName"]: k["KeyPairId"] for k in client.describe_key_pairs()["KeyPairs"]}
    vpcs = {v["VpcId"]: v["CidrBlock"] for v in client.describe_vpcs()["Vpcs"]}
    subnets = {s["SubnetId"]: s["CidrBlock"] for s in client.describe_subnets()["Subnets"]}
    return {
        "instances": instances,
        "groups": groups,
        "volumes": volumes,
        "images": images,
        "snapshots": snapshots,
        "key_pairs": keys,
        "vpcs": vpcs,
        "subnets": subnets,
    }


def without(inv: Inventory, ids: set[str]) -> Inventory:
    return {kind: {k: v for k, v in items.items() if k not in ids} for kind, items in inv.items()}


# ---- the CLI's EC2 client -----------------------------------------------------------


def _emulate_dependency_violation(client: Any) -> None:
    """AWS refuses to delete a group an instance uses or another group's rule names."""

    def hook(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        group_id = params["body"]["GroupId"]
        used = [
            i["InstanceId"]
            for r in client.describe_instances()["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] in ALIVE
            and group_id in {g["GroupId"] for g in i.get("SecurityGroups", [])}
        ]
        named = [
            g["GroupId"]
            for g in client.describe_security_groups()["SecurityGroups"]
            if g["GroupId"] != group_id
            and any(
                pair.get("GroupId") == group_id
                for perm in g["IpPermissions"]
                for pair in perm.get("UserIdGroupPairs", [])
            )
        ]
        if not (used or named):
            return None
        message = f"resource {group_id} has a dependent object"
        error = {"Error": {"Code": "DependencyViolation", "Message": message}}
        return AWSResponse("https://ec2.amazonaws.com/", 400, {}, None), error

    client.meta.events.register("before-call.ec2.DeleteSecurityGroup", hook)


@dataclass
class CliCloud:
    """What the CLI's EC2 clients were asked for and which mutating calls they made."""

    connects: list[tuple[str | None, str | None]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [body for op, body in self.calls if op == operation]

    def mutations(self) -> list[str]:
        return [op for op, _ in self.calls if not op.startswith("Describe")]


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()  # one service-model load for all the CLI's clients


@pytest.fixture
def cli_cloud(monkeypatch: pytest.MonkeyPatch, aws: None) -> CliCloud:
    """make_client for the CLI: the shared session (fast), recorded, AWS-like group deletes."""
    seen = CliCloud()

    def make_client(region: str | None, endpoint_url: str | None = None) -> Any:
        seen.connects.append((region, endpoint_url))
        client = _session().client("ec2", region_name=region or REGION, config=RETRY_CONFIG)

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            seen.calls.append((model.name, dict(params.get("body", {}))))

        client.meta.events.register("before-call.ec2.*", record)
        _emulate_dependency_violation(client)
        return client

    monkeypatch.setattr(ec2_module, "make_client", make_client)
    return seen


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def listed_ids(body: dict[str, Any], prefix: str) -> set[str]:
    return {v for k, v in body.items() if k.startswith(prefix)}


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's states are final at once: a wait that is not done at the first look is a
    bug, reported as a failure (timeout 0) instead of polling for 15 minutes."""
    for module in ("destroy", "terminate_workers"):
        monkeypatch.setattr(f"cloudjhub.commands.{module}.WAIT_TIMEOUT", 0.0)
        monkeypatch.setattr(f"cloudjhub.commands.{module}.POLL_SECONDS", 0.0)
    monkeypatch.setattr(teardown, "GROUP_DELETE_TIMEOUT", 0.0)
