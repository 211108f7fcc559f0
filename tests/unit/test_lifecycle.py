"""status, terminate-workers and destroy against moto, always among foreign resources.

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
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner, Result

from cloudjhub import waiting
from cloudjhub.aws import client as ec2_module
from cloudjhub.aws.client import RETRY_CONFIG, Instance, NotOurs
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.commands import cloud_options
from cloudjhub.commands.status import duration, status_rows
from cloudjhub.launch import teardown
from cloudjhub.launch.groups import ClusterGroups, ensure_security_groups
from cloudjhub.launch.image import build_worker_image
from cloudjhub.tags import CLUSTER_TAG, ROLE_TAG, USER_TAG, Role, tag_list, tags_for
from tests.helpers import ApiCalls
from tests.unit.conftest import REGION, SshKey

ROOT = Path(__file__).resolve().parents[2]
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


# ---- terminate-workers --------------------------------------------------------------


def test_terminate_workers_terminates_only_the_clusters_workers(
    world: World, cli_cloud: CliCloud
) -> None:
    client, alpha = world.ec2.client, world.alpha
    before = inventory(client)

    result = run("terminate-workers", "alpha", "--yes")

    assert result.exit_code == 0, result.output
    after = inventory(client)
    for user, instance_id in alpha.workers.items():
        assert user in result.output and instance_id in result.output
        assert after["instances"][instance_id] == "terminated"
    # One TerminateInstances, naming exactly alpha's workers.
    [body] = cli_cloud.named("TerminateInstances")
    assert listed_ids(body, "InstanceId") == set(alpha.workers.values())
    assert "instance(s) to terminate" in result.output  # the progress line
    # Home volumes are kept: alice's is detached now, dave's untouched.
    assert after["volumes"][alpha.homes["alice"]] == ("available", ())
    assert after["volumes"][alpha.homes["dave"]] == ("available", ())
    assert "kept: 2 home volume(s)" in result.output
    # Nothing else changed: alpha's manager, groups, image, and every foreign resource.
    changed = alpha.worker_ids(homes=True)
    assert without(after, changed) == without(before, changed)
    assert after["instances"][alpha.manager] == "running"


def test_terminate_workers_can_delete_home_volumes_after_detaching(
    world: World, cli_cloud: CliCloud
) -> None:
    client, alpha = world.ec2.client, world.alpha
    before = inventory(client)

    result = run("terminate-workers", "alpha", "--yes", "--delete-home-volumes")

    assert result.exit_code == 0, result.output
    after = inventory(client)
    for volume_id in alpha.homes.values():
        assert volume_id in result.output
        assert volume_id not in after["volumes"]
    assert "home volume(s) to be detached" in result.output
    # The volumes were deleted after the instances were terminated.
    ops = cli_cloud.mutations()
    assert ops.index("TerminateInstances") < ops.index("DeleteVolume")
    assert len(cli_cloud.named("DeleteVolume")) == 2
    changed = alpha.worker_ids(homes=True)
    assert without(after, changed) == without(before, changed)
    assert world.beta.homes["alice"] in after["volumes"]


def test_terminate_workers_dry_run_lists_and_changes_nothing(
    world: World, cli_cloud: CliCloud
) -> None:
    before = inventory(world.ec2.client)

    result = run("terminate-workers", "alpha", "--dry-run", "--delete-home-volumes")

    assert result.exit_code == 0, result.output
    for user, instance_id in world.alpha.workers.items():
        line = next(line for line in result.output.splitlines() if instance_id in line)
        assert user in line
    assert "stopped" in result.output and "running" in result.output
    assert world.alpha.homes["dave"] in result.output
    assert world.alpha.manager not in result.output
    assert cli_cloud.mutations() == []
    assert inventory(world.ec2.client) == before


def test_terminate_workers_refuses_without_a_terminal_or_yes(
    world: World, cli_cloud: CliCloud
) -> None:
    before = inventory(world.ec2.client)

    result = run("terminate-workers", "alpha", input="y\n")

    assert result.exit_code == 1
    assert "stdin is not a terminal" in result.output and "--yes" in result.output
    assert cli_cloud.mutations() == []
    assert inventory(world.ec2.client) == before


def test_terminate_workers_asks_a_person(
    world: World, cli_cloud: CliCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_options, "stdin_is_tty", lambda: True)
    before = inventory(world.ec2.client)

    declined = run("terminate-workers", "alpha", input="n\n")

    assert declined.exit_code == 1
    assert "Terminate 3 worker(s) of cluster alpha?" in declined.output
    assert inventory(world.ec2.client) == before

    accepted = run("terminate-workers", "alpha", input="y\n")

    assert accepted.exit_code == 0, accepted.output
    states = inventory(world.ec2.client)["instances"]
    assert {states[i] for i in world.alpha.workers.values()} == {"terminated"}


def test_terminate_workers_with_no_workers_says_so(world: World, cli_cloud: CliCloud) -> None:
    before = inventory(world.ec2.client)

    result = run("terminate-workers", "gamma")
    again = run("terminate-workers", "alpha", "--yes")
    twice = run("terminate-workers", "alpha", "--yes")

    assert result.exit_code == 0 and "no workers in cluster gamma" in result.output
    assert again.exit_code == 0
    assert twice.exit_code == 0 and "no workers in cluster alpha" in twice.output
    assert len(cli_cloud.named("TerminateInstances")) == 1
    changed = world.alpha.worker_ids(homes=True)
    assert without(inventory(world.ec2.client), changed) == without(before, changed)


def test_terminate_workers_rejects_a_bad_cluster_name(cli_cloud: CliCloud) -> None:
    result = CliRunner().invoke(main, ["terminate-workers", "Alpha!"])

    assert result.exit_code == 2
    assert "Invalid value for 'CLUSTER'" in result.output
    assert cli_cloud.connects == []


# ---- the shim -------------------------------------------------------------------------


def test_shim_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed; scripts/bootstrap installs it"
    done = subprocess.run([shellcheck, str(SHIM)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_shim_runs_terminate_workers_from_the_checkouts_venv() -> None:
    helped = subprocess.run(
        [str(SHIM), "--help"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    bad = subprocess.run(
        [str(SHIM), "Not A Cluster"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )

    assert helped.returncode == 0, helped.stderr
    assert "Usage: cloudjhub terminate-workers" in helped.stdout
    assert "--delete-home-volumes" in helped.stdout
    assert bad.returncode == 2  # the argument reached terminate-workers' validation
    assert "cluster name 'Not A Cluster'" in bad.stderr


def test_shim_falls_back_to_an_installed_cloudjhub(tmp_path: Path) -> None:
    copy = tmp_path / "scripts" / "terminate_all_workers"  # no .venv next to it
    copy.parent.mkdir()
    shutil.copy2(SHIM, copy)
    venv_bin = ROOT / ".venv" / "bin"

    installed = subprocess.run(
        [str(copy), "--help"],
        capture_output=True,
        text=True,
        env={"PATH": f"{venv_bin}:/usr/bin:/bin"},
    )
    missing = subprocess.run(
        [str(copy), "alpha"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )

    assert installed.returncode == 0, installed.stderr
    assert "Usage: cloudjhub terminate-workers" in installed.stdout
    assert missing.returncode == 127
    assert "cloudjhub is not installed" in missing.stderr


# ---- destroy ------------------------------------------------------------------------


def test_destroy_deletes_the_cluster_and_nothing_else_then_finds_nothing(
    world: World, cli_cloud: CliCloud
) -> None:
    client, alpha = world.ec2.client, world.alpha
    before = inventory(client)

    result = run("destroy", "alpha", "--yes")

    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("done")
    after = inventory(client)
    assert {after["instances"][i] for i in alpha.instances} == {"terminated"}
    assert "instance(s) to terminate" in result.output
    for gone in ("groups", "images", "snapshots"):
        assert not alpha.all_ids(homes=False) & after[gone].keys(), gone
    assert alpha.key_pair not in after["key_pairs"]
    assert "alpha-worker-key" in after["key_pairs"]  # tagged alpha, but not the workers' key
    assert {after["volumes"][v][0] for v in alpha.homes.values()} == {"available"}
    # Groups went in dependency order, and only after the instances.
    ops = cli_cloud.mutations()
    assert ops.index("TerminateInstances") < ops.index("DeleteSecurityGroup")
    deleted = [b["GroupId"] for b in cli_cloud.named("DeleteSecurityGroup")]
    assert deleted == [alpha.groups.manager2, alpha.groups.worker, alpha.groups.manager]
    assert ops.index("DeregisterImage") < ops.index("DeleteSnapshot")
    # The look-alike groups in another VPC were noticed and left alone.
    for group_id in world.lookalike_groups:
        assert f"left alone: security group {group_id}" in result.output
    changed = alpha.all_ids(homes=True)  # homes are kept (asserted above), but detached
    assert without(after, changed) == without(before, changed)

    cli_cloud.calls.clear()
    second = run("destroy", "alpha", "--yes")

    assert second.exit_code == 0, second.output
    assert "nothing to delete for cluster alpha" in second.output
    assert "kept: 2 home volume(s)" in second.output
    assert cli_cloud.mutations() == []
    assert inventory(client) == after


def test_destroy_deletes_home_volumes_only_with_the_flag(world: World, cli_cloud: CliCloud) -> None:
    client, alpha = world.ec2.client, world.alpha
    before = inventory(client)

    result = run("destroy", "alpha", "--yes", "--delete-home-volumes")

    assert result.exit_code == 0, result.output
    after = inventory(client)
    assert not set(alpha.homes.values()) & after["volumes"].keys()
    assert set(world.beta.homes.values()) <= after["volumes"].keys()
    changed = alpha.all_ids(homes=True)
    assert without(after, changed) == without(before, changed)
    assert "nothing to delete" in run("destroy", "alpha", "--yes", "--delete-home-volumes").output


def test_destroy_dry_run_lists_everything_and_changes_nothing(
    world: World, cli_cloud: CliCloud
) -> None:
    client, alpha = world.ec2.client, world.alpha
    before = inventory(client)

    result = run("destroy", "alpha", "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("would delete in cluster alpha:")
    for resource_id in alpha.all_ids(homes=False) - alpha.root_volumes:
        if before["instances"].get(resource_id) == "terminated":
            continue  # the builder, terminated when the image was made
        assert resource_id in result.output
    assert "kept: 2 home volume(s)" in result.output
    for foreign in world.beta.all_ids(homes=True) | set(world.untagged_instances):
        assert foreign not in result.output
    assert cli_cloud.mutations() == []
    assert inventory(client) == before


def test_destroy_refuses_without_confirmation(world: World, cli_cloud: CliCloud) -> None:
    before = inventory(world.ec2.client)

    result = run("destroy", "alpha", "--delete-home-volumes")

    assert result.exit_code == 1
    assert "stdin is not a terminal" in result.output
    assert cli_cloud.mutations() == []
    assert inventory(world.ec2.client) == before


def test_destroy_reports_a_group_still_used_by_a_foreign_instance(
    world: World, cli_cloud: CliCloud, worker_ami: str, key_name: str, network: Any
) -> None:
    client, alpha = world.ec2.client, world.alpha
    intruder = client.run_instances(
        ImageId=worker_ami,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        SubnetId=network.subnet_id,
        KeyName=key_name,
        SecurityGroupIds=[alpha.groups.manager2],
    )["Instances"][0]["InstanceId"]
    before = inventory(client)

    result = run("destroy", "alpha", "--yes")

    assert result.exit_code == 1
    report = result.output[result.output.index("could not delete") :]
    assert f"security group {alpha.groups.manager2} (alpha-manager2)" in report
    assert "DependencyViolation" in report and "still used by an instance" in report
    after = inventory(client)
    assert after["instances"][intruder] == "running"
    # manager2's rule naming the worker group was revoked, so worker and manager went.
    assert alpha.groups.worker not in after["groups"]
    assert alpha.groups.manager not in after["groups"]
    assert after["groups"][alpha.groups.manager2][1] == "[]"
    assert alpha.image not in after["images"]
    assert set(alpha.homes.values()) <= after["volumes"].keys()
    changed = alpha.all_ids(homes=True)  # homes are kept (asserted above), but detached
    assert without(after, changed) == without(before, changed)

    again = run("destroy", "alpha", "--yes")  # still in use: fails again, says so again

    assert again.exit_code == 1
    assert f"security group {alpha.groups.manager2}" in again.output
    assert inventory(client) == after

    client.terminate_instances(InstanceIds=[intruder])
    last = run("destroy", "alpha", "--yes")

    assert last.exit_code == 0, last.output
    assert alpha.groups.manager2 not in inventory(client)["groups"]


def _lingering_interfaces(
    monkeypatch: pytest.MonkeyPatch, group_id: str, refusals: int
) -> list[str]:
    """On the CLI's clients, refuse the first `refusals` deletes of `group_id` with
    DependencyViolation, as AWS does while a terminated instance's interface lingers."""
    attempts: list[str] = []
    inner = ec2_module.make_client

    def hook(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if params["body"]["GroupId"] != group_id:
            return None
        attempts.append(group_id)
        if len(attempts) > refusals:
            return None
        message = f"resource {group_id} has a dependent object"
        error = {"Error": {"Code": "DependencyViolation", "Message": message}}
        return AWSResponse("https://ec2.amazonaws.com/", 400, {}, None), error

    def make_client(region: str | None, endpoint_url: str | None = None) -> Any:
        client = inner(region, endpoint_url)
        client.meta.events.register("before-call.ec2.DeleteSecurityGroup", hook)
        return client

    monkeypatch.setattr(ec2_module, "make_client", make_client)
    return attempts


def test_destroy_retries_a_group_until_its_dependency_clears(
    world: World, cli_cloud: CliCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = world.alpha
    attempts = _lingering_interfaces(monkeypatch, alpha.groups.manager2, refusals=2)
    monkeypatch.setattr(teardown, "GROUP_DELETE_TIMEOUT", 60.0)

    result = run("destroy", "alpha", "--yes")

    assert result.exit_code == 0, result.output
    assert attempts == [alpha.groups.manager2] * 3  # refused twice, then deleted
    waiting = [line for line in result.output.splitlines() if "to lose their dependents" in line]
    assert len(waiting) == 2 and alpha.groups.manager2 in waiting[0]
    assert "of 60s)" in waiting[0]
    assert f"deleted security group {alpha.groups.manager2} (alpha-manager2)" in result.output
    groups = inventory(world.ec2.client)["groups"]
    assert not {alpha.groups.manager, alpha.groups.manager2, alpha.groups.worker} & groups.keys()
    assert len(cli_cloud.named("DeleteSecurityGroup")) == 5  # 3 groups, 2 retries


class _SleepClock:
    """Stands in for the `time` module inside `waiting`, where teardown's waits poll."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_destroy_gives_up_on_a_group_at_the_time_limit(
    world: World, cli_cloud: CliCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = world.alpha
    attempts = _lingering_interfaces(monkeypatch, alpha.groups.worker, refusals=10**6)
    monkeypatch.setattr(teardown, "GROUP_DELETE_TIMEOUT", 0.5)
    monkeypatch.setattr("cloudjhub.commands.destroy.POLL_SECONDS", 0.1)
    # A clock that only sleeping moves: the count of attempts cannot depend on load.
    clock = _SleepClock()
    monkeypatch.setattr(waiting, "time", clock)

    result = run("destroy", "alpha", "--yes")

    assert result.exit_code == 1
    assert len(attempts) == 6  # at 0, 0.1, ... 0.5 s of (slept) time
    assert clock.now == pytest.approx(0.5)
    report = result.output[result.output.index("could not delete") :]
    assert f"security group {alpha.groups.worker} (alpha-worker)" in report
    assert "DependencyViolation" in report and f"tried {len(attempts)} times" in report
    groups = inventory(world.ec2.client)["groups"]
    assert alpha.groups.worker in groups
    assert not {alpha.groups.manager, alpha.groups.manager2} & groups.keys()


def test_destroy_leaves_an_untagged_key_pair_of_the_workers_name(
    world: World, ssh_key: SshKey, cli_cloud: CliCloud
) -> None:
    ec2 = world.ec2
    ec2.client.import_key_pair(KeyName="gamma-workers", PublicKeyMaterial=ssh_key.public.encode())
    before = inventory(ec2.client)

    result = run("destroy", "gamma", "--yes")

    assert result.exit_code == 0, result.output
    assert "nothing to delete for cluster gamma" in result.output
    assert "left alone: key pair gamma-workers is not tagged cloudjhub:cluster=gamma" in (
        result.output
    )
    assert cli_cloud.mutations() == []
    assert inventory(ec2.client) == before


# ---- the guards under the commands ----------------------------------------------------


def test_every_delete_guard_refuses_another_clusters_resources(world: World) -> None:
    ec2, beta = world.ec2, world.beta
    before = inventory(ec2.client)
    attempts: list[Callable[[], object]] = [
        lambda: ec2.delete_security_group(beta.groups.worker),
        lambda: ec2.delete_security_group(world.lookalike_groups[0]),
        lambda: ec2.revoke_group_references(world.lookalike_groups[0], world.lookalike_groups),
        lambda: ec2.delete_home_volume(beta.homes["dave"]),
        lambda: ec2.deregister_image(beta.image),
        lambda: ec2.delete_snapshot(beta.snapshots[0]),
        lambda: ec2.delete_key_pair(beta.key_pair),
        lambda: ec2.delete_key_pair("stray"),
        lambda: ec2.delete_home_volume(beta.root_volumes.copy().pop()),  # role=worker, beta
        lambda: ec2.terminate(world.untagged_instances[:1]),
    ]
    for attempt in attempts:
        with pytest.raises(NotOurs):
            attempt()
    assert inventory(ec2.client) == before


def test_volume_guard_refuses_a_home_volume_in_use(world: World) -> None:
    with pytest.raises(Exception, match="in-use, not detached"):
        world.ec2.delete_home_volume(world.alpha.homes["alice"])
    assert world.alpha.homes["alice"] in inventory(world.ec2.client)["volumes"]


def test_delete_guards_refuse_without_ids(world: World) -> None:
    ec2 = world.ec2
    before, calls = inventory(ec2.client), ApiCalls(ec2.client)
    with pytest.raises(NotOurs, match="no explicit"):
        ec2.terminate([])
    with pytest.raises(NotOurs, match="not tagged"):
        ec2.delete_home_volume("vol-0123456789abcdef0")  # unknown: never deleted blind
    for op in ("DeleteVolume", "TerminateInstances"):
        assert calls[op] == 0
    assert inventory(ec2.client) == before


# ---- status -------------------------------------------------------------------------


def test_status_lists_workers_and_manager(world: World, cli_cloud: CliCloud) -> None:
    result = run("status", "alpha")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["USER", "INSTANCE", "STATE", "TYPE", "LAUNCHED", "UPTIME"]
    assert lines[1].startswith("(manager)") and world.alpha.manager in lines[1]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"alice", "bob", "carol"}
    assert world.alpha.workers["alice"] in rows["alice"] and "running" in rows["alice"]
    assert "t3.medium" in rows["alice"] and " UTC" in rows["alice"]
    assert "stopped" in rows["carol"] and rows["carol"].rstrip().endswith("-")  # no uptime
    assert not rows["alice"].rstrip().endswith("-")
    for foreign in world.beta.all_ids(homes=True) | set(world.untagged_instances):
        assert foreign not in result.output
    assert cli_cloud.mutations() == []


def test_status_json(world: World, cli_cloud: CliCloud) -> None:
    result = run("status", "alpha", "--json", "--region", "us-east-1", "--aws-endpoint", "x")

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["cluster"] == "alpha"
    by_id = {row["instance_id"]: row for row in data["instances"]}
    assert set(by_id) == {world.alpha.manager, *world.alpha.workers.values()}
    assert by_id[world.alpha.manager]["role"] == "manager"
    alice = by_id[world.alpha.workers["alice"]]
    assert alice["user"] == "alice" and alice["state"] == "running"
    assert alice["instance_type"] == "t3.medium"
    assert datetime.fromisoformat(alice["launch_time"]).tzinfo is not None
    assert isinstance(alice["uptime_seconds"], int) and alice["uptime_seconds"] >= 0
    assert by_id[world.alpha.workers["carol"]]["uptime_seconds"] is None
    assert cli_cloud.connects == [("us-east-1", "x")]


def test_aws_options_come_from_cloudjhub_variables_as_for_launch(
    world: World, cli_cloud: CliCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same aws_options as `launch` (whose tests cover AWS_ENDPOINT_URL, which the
    recording client here would itself obey): CLOUDJHUB_<OPTION>, unless given."""
    unset = run("status", "alpha", "--json")
    monkeypatch.setenv("CLOUDJHUB_REGION", "us-east-1")
    monkeypatch.setenv("CLOUDJHUB_AWS_ENDPOINT", "http://127.0.0.2:4566")
    ours = run("destroy", "alpha", "--dry-run")
    given = run("terminate-workers", "alpha", "--dry-run", "--aws-endpoint", "http://127.0.0.3")

    for result in (unset, ours, given):
        assert result.exit_code == 0, result.output
    assert cli_cloud.connects == [
        (None, None),
        ("us-east-1", "http://127.0.0.2:4566"),
        ("us-east-1", "http://127.0.0.3"),
    ]
    assert cli_cloud.mutations() == []


def test_a_cloud_failure_is_one_error_line_and_exit_1(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    result = CliRunner().invoke(main, ["destroy", "alpha", "--yes"])

    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("error: ") and "(pass --region or set AWS_DEFAULT_REGION)" in line


def test_status_with_no_workers(world: World, cli_cloud: CliCloud) -> None:
    run("terminate-workers", "alpha", "--yes")

    empty = run("status", "gamma")
    managed = run("status", "alpha")
    as_json = run("status", "gamma", "--json")
    everything = run("status", "alpha", "--all")

    assert empty.exit_code == 0 and empty.output == "no workers in cluster gamma\n"
    assert managed.exit_code == 0
    assert "(manager)" in managed.output and "no workers in cluster alpha" in managed.output
    assert json.loads(as_json.output) == {"cluster": "gamma", "instances": []}
    assert everything.output.count("terminated") == 3


def test_status_region_and_endpoint_come_from_the_boto3_chain(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real make_client: no --region means AWS_DEFAULT_REGION; --region overrides."""
    default = run("status", "alpha")
    elsewhere = run("status", "alpha", "--region", "eu-west-1")
    bad_url = CliRunner().invoke(main, ["status", "alpha", "--aws-endpoint", "not a url"])
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    nowhere = CliRunner().invoke(main, ["status", "alpha"])

    assert world.alpha.workers["alice"] in default.output
    assert elsewhere.output == "no workers in cluster alpha\n"
    assert nowhere.exit_code == 1
    assert "region" in nowhere.output and "--region" in nowhere.output
    assert bad_url.exit_code == 1 and "Invalid endpoint: not a url" in bad_url.output


def test_status_rows_uptime_only_for_running() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def inst(iid: str, state: str, role: str, user: str | None, ago: timedelta) -> Instance:
        tags = {CLUSTER_TAG: "alpha", ROLE_TAG: role, **({USER_TAG: user} if user else {})}
        return Instance(iid, state, "t3.small", None, now - ago, "us-east-1a", tags)

    rows = status_rows(
        [
            inst("i-3", "stopped", "worker", "zed", timedelta(hours=5)),
            inst("i-2", "running", "worker", "amy", timedelta(hours=2, minutes=3)),
            inst("i-1", "running", "manager", None, timedelta(days=3)),
            inst("i-4", "terminated", "worker", "old", timedelta(days=1)),
            inst("i-5", "running", "builder", None, timedelta(minutes=1)),
        ],
        now,
    )

    assert [(r["instance_id"], r["uptime_seconds"]) for r in rows] == [
        ("i-1", 3 * 86400),
        ("i-2", 2 * 3600 + 180),
        ("i-3", None),
    ]
    assert [duration(s) for s in (5, 65, 7380, 3 * 86400 + 3600)] == [
        "5s",
        "1m 05s",
        "2h 03m",
        "3d 1h",
    ]


# ---- waiting --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's states are final at once: a wait that is not done at the first look is a
    bug, reported as a failure (timeout 0) instead of polling for 15 minutes."""
    for module in ("destroy", "terminate_workers"):
        monkeypatch.setattr(f"cloudjhub.commands.{module}.WAIT_TIMEOUT", 0.0)
        monkeypatch.setattr(f"cloudjhub.commands.{module}.POLL_SECONDS", 0.0)
    monkeypatch.setattr(teardown, "GROUP_DELETE_TIMEOUT", 0.0)


def test_wait_reports_progress_until_done_or_deadline() -> None:
    seen: list[str] = []
    states = iter(
        [
            {"i-1": "shutting-down", "i-2": "shutting-down"},
            {"i-1": "terminated", "i-2": "shutting-down"},
            {"i-1": "terminated", "i-2": "terminated"},
        ]
    )

    final = teardown.wait_for(
        "2 instance(s) to terminate", lambda: next(states), "terminated".__eq__, seen.append, 60, 0
    )
    stuck = teardown.wait_for(
        "1 volume", lambda: {"v": "in-use"}, "available".__eq__, seen.append, 0, 0
    )

    assert final == {"i-1": "terminated", "i-2": "terminated"}
    assert seen[0].startswith("waiting for 2 instance(s) to terminate: 2 shutting-down (")
    assert seen[1].startswith(
        "waiting for 2 instance(s) to terminate: 1 shutting-down, 1 terminated"
    )
    assert seen[2].startswith("2 instance(s) to terminate: done")
    assert stuck == {"v": "in-use"} and seen[3].startswith("waiting for 1 volume: 1 in-use")
