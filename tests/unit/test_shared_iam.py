"""The shared folder's EFS admits only the cluster's roles (moto in-process): the file
system policy and the workers' role and profile `launch --shared-storage efs` makes
(also on a re-run), `destroy`, the hub's iam:PassRole (`cloudjhub iam-policy`), and
the profile on RunInstances only when the cluster has shared storage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from jupyterhub.objects import Hub

from cloudjhub.aws.client import Instance, NotOurs, boto_client
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2, ensure_instance_profile
from cloudjhub.aws.worker_role import WorkersRole
from cloudjhub.cli import main
from cloudjhub.config import load_server_config
from cloudjhub.launch.iam_shared import EC2_TRUST, workers_role_policy
from cloudjhub.launch.manager_shared import NoEfsUtils, mount_on_manager
from cloudjhub.launch.shared_storage import ensure_shared_storage
from cloudjhub.local.emulator import FleetEmulator
from cloudjhub.pool_keeper import pool_spec
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.tags import Role, tags_for
from tests.unit.conftest import REGION
from tests.unit.test_launch_cli import args, image_like, run
from tests.unit.test_launch_preflight import SUPPORTED_NAMES, refused, with_base
from tests.unit.test_shared_folder import _options, cluster

__all__ = ["args", "cluster"]  # fixtures, shared with those tests

ACTIONS = [
    "elasticfilesystem:ClientMount",
    "elasticfilesystem:ClientRootAccess",
    "elasticfilesystem:ClientWrite",
]
ALLOW_ALL = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ACTIONS}


def _policy(fs_id: str) -> dict[str, Any]:
    text = boto_client("efs", REGION).describe_file_system_policy(FileSystemId=fs_id)["Policy"]
    found: dict[str, Any] = json.loads(text)
    return found


def _role_exists(name: str) -> bool:
    iam = boto_client("iam", REGION)
    return any(r["RoleName"] == name for r in iam.list_roles()["Roles"]) or any(
        p["InstanceProfileName"] == name for p in iam.list_instance_profiles()["InstanceProfiles"]
    )


def test_launch_lets_only_the_workers_and_managers_roles_mount_over_tls(
    ec2: LocalCloudEc2,
    cluster: dict[str, Any],
    tmp_path: Path,
) -> None:
    ensure_instance_profile("alpha-manager", REGION)
    manager_role = boto_client("iam", REGION).get_role(RoleName="alpha-manager")["Role"]["Arn"]
    subnets = cluster["subnets"]
    opts = _options(tmp_path, subnets[0], subnets[2], subnets[1]).model_copy(
        update={"instance_profile": "alpha-manager"}
    )
    said: list[str] = []
    made = ensure_shared_storage(ec2, opts, cluster["groups"], cluster["vpc"], said.append)
    assert made is not None
    fs_id, profile, undo = made
    assert profile == "alpha-workers"
    efs, iam = boto_client("efs", REGION), boto_client("iam", REGION)
    fs_arn = efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]["FileSystemArn"]
    workers_role = iam.get_role(RoleName="alpha-workers")["Role"]

    assert _policy(fs_id) == {
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
                "Principal": {"AWS": sorted([workers_role["Arn"], manager_role])},
                "Action": ACTIONS,
                "Resource": fs_arn,
                "Condition": {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}},
            },
        ],
    }
    # The workers' role: trusted by EC2, allowed those three actions on this file system only.
    assert workers_role["AssumeRolePolicyDocument"] == EC2_TRUST
    assert iam.list_role_policies(RoleName="alpha-workers")["PolicyNames"] == [
        "cloudjhub-shared-folder"
    ]
    inline = iam.get_role_policy(RoleName="alpha-workers", PolicyName="cloudjhub-shared-folder")
    assert inline["PolicyDocument"]["Statement"] == [
        {"Sid": "MountTheSharedFolder", "Effect": "Allow", "Action": ACTIONS, "Resource": fs_arn}
    ]
    assert iam.list_attached_role_policies(RoleName="alpha-workers")["AttachedPolicies"] == []
    listed = iam.get_instance_profile(InstanceProfileName="alpha-workers")["InstanceProfile"]
    assert [r["RoleName"] for r in listed["Roles"]] == ["alpha-workers"]

    # A re-run puts the policy again (here: someone had opened it to everyone) and
    # reuses the role.
    opened = {"Version": "2012-10-17", "Statement": [{**ALLOW_ALL, "Resource": fs_arn}]}
    efs.put_file_system_policy(FileSystemId=fs_id, Policy=json.dumps(opened))
    assert _policy(fs_id) == opened
    again = ensure_shared_storage(ec2, opts, cluster["groups"], cluster["vpc"], said.append)
    assert again is not None and again[:2] == (fs_id, "alpha-workers")
    assert _policy(fs_id)["Statement"][1]["Principal"]["AWS"] == sorted(
        [workers_role["Arn"], manager_role]
    )
    assert len(iam.list_instance_profiles()["InstanceProfiles"]) == 2  # manager's, workers'

    # A failed first launch's undo deletes the role and profile with the file system.
    assert undo() == []
    assert not _role_exists("alpha-workers")
    assert efs.describe_file_systems()["FileSystems"] == []


def test_destroy_keeps_the_workers_role_with_the_file_system(
    ec2: LocalCloudEc2,
    cluster: dict[str, Any],
) -> None:
    made = ensure_shared_storage(ec2, cluster["opts"], cluster["groups"], cluster["vpc"], print)
    assert made is not None
    kept = CliRunner().invoke(main, ["destroy", "alpha", "--yes"])
    assert kept.exit_code == 0, kept.output
    assert "workers' IAM role alpha-workers" in kept.output
    assert _role_exists("alpha-workers")
    dry = CliRunner().invoke(main, ["destroy", "alpha", "--dry-run", "--delete-shared-storage"])
    assert "IAM role and instance profile alpha-workers" in dry.output
    gone = CliRunner().invoke(main, ["destroy", "alpha", "--yes", "--delete-shared-storage"])
    assert gone.exit_code == 0, gone.output
    assert not _role_exists("alpha-workers")


def test_a_role_of_that_name_not_tagged_ours_is_refused(ec2: LocalCloudEc2) -> None:
    boto_client("iam", REGION).create_role(
        RoleName="alpha-workers", AssumeRolePolicyDocument=json.dumps(EC2_TRUST)
    )
    role = WorkersRole.connect("alpha", REGION, None)
    with pytest.raises(NotOurs, match="not tagged cloudjhub:cluster=alpha"):
        role.ensure(EC2_TRUST, workers_role_policy("arn:aws:elasticfilesystem:*:*:*"))
    with pytest.raises(NotOurs):
        role.delete()
    assert boto_client("iam", REGION).get_role(RoleName="alpha-workers")


def _iam_policy(*options: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["iam-policy", "alpha", *options])
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.output)
    return found


def test_the_hub_may_pass_only_the_workers_role_and_only_to_ec2() -> None:
    policy = _iam_policy("--shared-storage", "efs", "--region", REGION, "--account", "1" * 12)
    passes = [s for s in policy["Statement"] if "iam:PassRole" in json.dumps(s["Action"])]
    assert passes == [
        {
            "Sid": "PassTheWorkersRoleToEc2",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": "arn:aws:iam::111111111111:role/alpha-workers",
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        }
    ]
    assert "iam:" not in json.dumps(_iam_policy()["Statement"])  # no shared storage: none
    bad = CliRunner().invoke(main, ["iam-policy", "alpha", "--shared-storage", "nfs"])
    assert bad.exit_code == 2 and "--shared-storage" in bad.output


def _server_config(tmp_path: Path, shared: bool) -> Path:
    data: dict[str, Any] = {
        "CLUSTER_NAME": "alpha",
        "REGION": REGION,
        "WORKER_AMI": "ami-12345678",
        "SUBNET_ID": "subnet-12345678",
        "WORKER_SECURITY_GROUPS": ["sg-1"],
        "KEY_NAME": "k",
        "SHARED_WORKER_INSTANCE_PROFILE": "alpha-workers",
    }
    if shared:
        data |= {"SHARED_STORAGE": "efs", "SHARED_FILE_SYSTEM_ID": "fs-0123456789abcdef0"}
    path = tmp_path / f"server_config-{shared}.json"
    path.write_text(json.dumps(data))
    return path


def _launched_profile(ec2: LocalCloudEc2, spec: WorkerSpec, pool: bool) -> str | None:
    if pool:
        instance = ec2.launch_pool_workers(spec, 1, f"pool-{spec.instance_profile}")[0]
    else:
        instance = ec2.launch_worker("ann", spec, f"ann-{spec.instance_profile}")
    found = ec2.client.describe_instances(InstanceIds=[instance.id])
    data = found["Reservations"][0]["Instances"][0]
    arn = (data.get("IamInstanceProfile") or {}).get("Arn")
    return str(arn) if arn else None


@pytest.mark.parametrize("shared", [True, False])
def test_workers_launch_with_the_profile_only_with_shared_storage(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, shared: bool
) -> None:
    """The spawner's launch and the warm pool's, through RunInstances (moto records it)."""
    fs_arn = f"arn:aws:elasticfilesystem:{REGION}:123456789012:file-system/fs-0123456789abcdef0"
    WorkersRole.connect("alpha", REGION, None).ensure(EC2_TRUST, workers_role_policy(fs_arn))
    config = _server_config(tmp_path, shared)
    user = SimpleNamespace(name="ann", escaped_name="ann", url="/user/ann/")
    spawner = InstanceSpawner(
        server_config_file=str(config), user=user, hub=Hub(), oauth_client_id="c"
    )
    mine = spawner._spec().instance_profile
    pools = pool_spec(load_server_config(config)).instance_profile
    for profile, pool in ((mine, False), (pools, True)):
        arn = _launched_profile(ec2, replace(spec, instance_profile=profile), pool)
        if shared:
            assert arn is not None and arn.endswith(":instance-profile/alpha-workers")
        else:
            assert arn is None


def test_the_manager_refuses_to_mount_without_efs_utils(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only efs-utils' helper mounts with IAM, which the policy requires; nothing is
    written to fstab before the refusal."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no mount.efs
    config = load_server_config(_server_config(tmp_path, shared=True))
    with pytest.raises(NoEfsUtils, match="amazon-efs-utils"):
        mount_on_manager(Path("/"), config)


def test_launch_with_shared_storage_needs_a_base_image_with_efs_utils(
    args: list[str], ec2: LocalCloudEc2, worker_ami: str
) -> None:
    """Through the launch CLI: an Ubuntu base image has no amazon-efs-utils, so neither
    its manager nor its workers could mount the folder; Amazon Linux 2023 plans the
    workers' role and the policy."""
    [line] = refused([*args, "--shared-storage", "efs"], ec2)
    assert line == (
        f"error: BASE_AMI {args[2]}: Ubuntu 24.04 has no amazon-efs-utils package, whose "
        "mount helper is the only client the shared folder's EFS admits (TLS and IAM) "
        "with --shared-storage; use Amazon Linux 2023"
    )
    al2023 = image_like(ec2, worker_ami, *SUPPORTED_NAMES[3])
    users = ["--server-username", "ec2-user", "--worker-username", "ec2-user"]
    planned = run(*with_base(args, al2023), *users, "--shared-storage", "efs", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert "IAM role and instance profile alpha-workers" in planned.output
    assert "TLS only, mounts only by the workers' and the manager's roles" in planned.output


def test_the_local_cloud_hands_credentials_to_the_manager_only(tmp_path: Path) -> None:
    """The emulator has only the manager's credentials: a worker launched with the
    shared folder's profile must not get them in its environment."""
    meta = SimpleNamespace(endpoint_url="http://127.0.0.1:1", region_name=REGION)
    endpoint: Any = SimpleNamespace(client=SimpleNamespace(meta=meta))
    fleet = FleetEmulator(
        endpoint,
        tmp_path,
        2222,
        publish_console=False,
        role_credentials={"AWS_ACCESS_KEY_ID": "manager"},
    )
    profile = "arn:aws:iam::123456789012:instance-profile/alpha-workers"

    def instance(role: Role | None) -> Instance:
        tags = tags_for("alpha", role) if role else {"Name": "not ours"}
        return Instance(
            "i-1", "running", "t3.medium", None, None, "a", tags, instance_profile=profile
        )

    assert fleet._instance_role_env(instance(Role.WORKER)) == {}
    # An allow-list: any other instance with a profile gets nothing either.
    assert fleet._instance_role_env(instance(Role.BUILDER)) == {}
    assert fleet._instance_role_env(instance(None)) == {}
    assert fleet._instance_role_env(instance(Role.MANAGER))["AWS_ACCESS_KEY_ID"] == "manager"
