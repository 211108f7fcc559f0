"""The shared course folder: the EFS side through moto (launch's step, `destroy`), and
the real agent mounting it in the emulated local cloud (as root, as CI runs)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from cloudjhub.aws.client import NotOurs, boto_client
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.aws.shared_storage import NFS_PORT, SharedStorage, creation_token
from cloudjhub.cli import main
from cloudjhub.config import InstanceConfig, server_config_from
from cloudjhub.launch.groups import ensure_security_groups
from cloudjhub.launch.manager_shared import fstab_line, with_entry
from cloudjhub.launch.options import LaunchOptions
from cloudjhub.launch.shared_storage import ensure_shared_storage
from cloudjhub.local.awslike import efs_creating
from cloudjhub.shared_folder import shared_settings
from cloudjhub.shared_spawner import SharedFolderMixin
from cloudjhub.tags import CLUSTER_TAG, tag_dict
from cloudjhub.worker.shared_mount import mounts_under, unmount_under
from tests.unit.conftest import REGION
from tests.unit.worker_harness import Worker

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs as root)")


# --------------------------------------------------------------------------- AWS side


def _options(tmp_path: Path, private: str, public: str, *more: str) -> LaunchOptions:
    return LaunchOptions(
        cluster="alpha",
        base_ami="ami-12345678",
        private_subnet=private,
        public_subnet=public,
        instance=InstanceConfig(SUBNET_IDS=list(more)),
        key_name="admin",
        key_file=tmp_path / "k",
        region=REGION,
        shared=shared_settings("efs", True, None, "alpha"),
        poll=0,
    )


@pytest.fixture
def cluster(ec2: LocalCloudEc2, tmp_path: Path) -> Iterator[dict[str, Any]]:
    vpc = ec2.ensure_vpc("10.42.0.0/16", {CLUSTER_TAG: "alpha"})
    subnets = [
        ec2.client.create_subnet(
            VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{zone}"
        )["Subnet"]["SubnetId"]
        for i, zone in ((1, "a"), (2, "b"), (3, "c"))
    ]
    groups = ensure_security_groups(ec2, vpc)
    opts = _options(tmp_path, subnets[0], subnets[2], subnets[1])
    yield {"vpc": vpc, "subnets": subnets, "groups": groups, "opts": opts}


def test_launch_makes_an_encrypted_efs_reachable_only_from_workers_once(
    ec2: LocalCloudEc2, cluster: dict[str, Any]
) -> None:
    said: list[str] = []
    groups, opts = cluster["groups"], cluster["opts"]
    made = ensure_shared_storage(ec2, opts, groups, cluster["vpc"], said.append)
    assert made is not None
    fs_id = made[0]
    efs = boto_client("efs", REGION)
    fs = efs.describe_file_systems(FileSystemId=fs_id)["FileSystems"][0]
    assert fs["Encrypted"] is True and fs["CreationToken"] == creation_token("alpha")
    assert tag_dict(fs["Tags"])[CLUSTER_TAG] == "alpha"
    targets = efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]
    # The workers' subnets (SUBNET_ID, then SUBNET_IDS), and the manager's public one:
    # its zone has no workers' subnet, and EFS's name resolves to the zone's target.
    assert sorted(t["SubnetId"] for t in targets) == sorted(cluster["subnets"])
    group_ids = {
        g
        for t in targets
        for g in efs.describe_mount_target_security_groups(MountTargetId=t["MountTargetId"])[
            "SecurityGroups"
        ]
    }
    assert len(group_ids) == 1
    group = ec2.client.describe_security_groups(GroupIds=list(group_ids))["SecurityGroups"][0]
    assert {(r["FromPort"], r["ToPort"]) for r in group["IpPermissions"]} == {(NFS_PORT, NFS_PORT)}
    assert all(r["IpRanges"] == [] for r in group["IpPermissions"])
    sources = {p["GroupId"] for r in group["IpPermissions"] for p in r["UserIdGroupPairs"]}
    assert sources == {groups.worker, groups.manager}
    # A re-launch finds all of it again.
    again = ensure_shared_storage(ec2, opts, groups, cluster["vpc"], said.append)
    assert again is not None and again[0] == fs_id
    assert len(efs.describe_file_systems()["FileSystems"]) == 1
    assert len(efs.describe_mount_targets(FileSystemId=fs_id)["MountTargets"]) == 3
    assert [line.split(",")[0] for line in said if line.startswith("shared")] == [
        f"shared folder: EFS {fs_id} (created)",
        f"shared folder: EFS {fs_id} (reused)",
    ]
    # A failed launch's undo deletes what this run made.
    assert made[2]() == []
    assert efs.describe_file_systems()["FileSystems"] == []


def test_launch_polls_efs_while_aws_still_creates_it_and_says_so(
    ec2: LocalCloudEc2, cluster: dict[str, Any]
) -> None:
    """AWS reports a new file system and mount target `creating` for a while; the
    local cloud's --like-aws does too (moto would not), and the launch says it waits."""
    efs = boto_client("efs", REGION)
    efs_creating.install(file_system=0.4, mount_target=0.4)
    try:
        said: list[str] = []
        opts = cluster["opts"].model_copy(update={"poll": 0.1})
        made = ensure_shared_storage(ec2, opts, cluster["groups"], cluster["vpc"], said.append)
        assert made is not None
        targets = efs.describe_mount_targets(FileSystemId=made[0])["MountTargets"]
        assert [t["LifeCycleState"] for t in targets] == ["available"] * 3
        waits = [line for line in said if "waiting for" in line]
        assert any(f"EFS file system {made[0]} to be available" in w for w in waits), said
        assert any(f"the mount targets of {made[0]} to be available" in w for w in waits), said
        assert made[2]() == []

        efs_creating.install(file_system=30, mount_target=30)
        fs = efs.create_file_system(CreationToken="another")
        assert fs["LifeCycleState"] == "creating"
        (seen,) = efs.describe_file_systems(FileSystemId=fs["FileSystemId"])["FileSystems"]
        assert seen["LifeCycleState"] == "creating"
        efs.delete_file_system(FileSystemId=fs["FileSystemId"])
    finally:
        efs_creating.uninstall()


def test_one_mount_target_per_zone_even_with_two_workers_subnets_there(
    ec2: LocalCloudEc2, cluster: dict[str, Any], tmp_path: Path
) -> None:
    """EFS allows one mount target per zone (CreateMountTarget: MountTargetConflict),
    and a target serves every subnet of its zone: a second workers' subnet in a zone,
    at launch or added at a re-launch, gets none of its own."""
    a, b, public = cluster["subnets"]
    also_a = ec2.client.create_subnet(
        VpcId=cluster["vpc"], CidrBlock="10.42.4.0/24", AvailabilityZone=f"{REGION}a"
    )["Subnet"]["SubnetId"]
    opts = _options(tmp_path, a, public, also_a, b)
    made = ensure_shared_storage(ec2, opts, cluster["groups"], cluster["vpc"], lambda _m: None)
    assert made is not None
    efs = boto_client("efs", REGION)
    targets = efs.describe_mount_targets(FileSystemId=made[0])["MountTargets"]
    assert sorted(t["SubnetId"] for t in targets) == sorted([a, b, public])
    # A re-launch whose first workers' subnet is the other one of zone a adds nothing.
    again = _options(tmp_path, also_a, public, a, b)
    assert ensure_shared_storage(ec2, again, cluster["groups"], cluster["vpc"], lambda _m: None)
    assert len(efs.describe_mount_targets(FileSystemId=made[0])["MountTargets"]) == 3


def test_a_file_system_with_our_token_but_not_our_tag_is_refused(ec2: LocalCloudEc2) -> None:
    efs = boto_client("efs", REGION)
    efs.create_file_system(CreationToken=creation_token("alpha"))
    with pytest.raises(NotOurs, match="not tagged"):
        SharedStorage.connect(ec2, REGION, None, poll=0).ensure_file_system()


def test_destroy_keeps_the_shared_folder_unless_asked(
    ec2: LocalCloudEc2, cluster: dict[str, Any]
) -> None:
    made = ensure_shared_storage(ec2, cluster["opts"], cluster["groups"], cluster["vpc"], print)
    assert made is not None
    fs_id = made[0]
    efs = boto_client("efs", REGION)
    kept = CliRunner().invoke(main, ["destroy", "alpha", "--yes"])
    assert kept.exit_code == 0, kept.output
    assert f"kept: shared folder EFS file system {fs_id}" in kept.output
    assert [f["FileSystemId"] for f in efs.describe_file_systems()["FileSystems"]] == [fs_id]
    # The workers' group went (the shared group's rule naming it was dropped first).
    names = [g["GroupName"] for g in ec2.client.describe_security_groups()["SecurityGroups"]]
    assert "alpha-worker" not in names and "alpha-manager" not in names
    assert "alpha-shared" in names

    dry = CliRunner().invoke(main, ["destroy", "alpha", "--dry-run", "--delete-shared-storage"])
    assert dry.exit_code == 0, dry.output
    assert (
        f"shared folder: EFS file system {fs_id}" in dry.output and "3 mount target" in dry.output
    )
    assert len(efs.describe_file_systems()["FileSystems"]) == 1

    gone = CliRunner().invoke(main, ["destroy", "alpha", "--yes", "--delete-shared-storage"])
    assert gone.exit_code == 0, gone.output
    assert efs.describe_file_systems()["FileSystems"] == []
    names = [g["GroupName"] for g in ec2.client.describe_security_groups()["SecurityGroups"]]
    assert "alpha-shared" not in names


def test_the_manager_mounts_the_shared_folder_from_fstab() -> None:
    config = server_config_from(
        {
            "CLUSTER_NAME": "alpha",
            "REGION": "eu-west-1",
            "WORKER_AMI": "ami-12345678",
            "SUBNET_ID": "subnet-12345678",
            "WORKER_SECURITY_GROUPS": ["sg-1"],
            "KEY_NAME": "k",
            "SHARED_FILE_SYSTEM_ID": "fs-0123456789abcdef0",
        }
    )
    # TLS and IAM: the file system's policy refuses any other mount (iam_shared.py).
    tls = fstab_line(config)
    assert tls == "fs-0123456789abcdef0:/ /srv/shared efs _netdev,nofail,tls,iam 0 0"
    old = "UUID=1 / ext4 defaults 0 1\nfs-old:/ /srv/shared efs _netdev 0 0\n"
    assert with_entry(old, tls) == f"UUID=1 / ext4 defaults 0 1\n{tls}\n"
    assert with_entry(with_entry(old, tls), tls) == with_entry(old, tls)


# --------------------------------------------------------------------------- the spawner


def test_staff_are_admins_and_members_of_a_staff_group(tmp_path: Path) -> None:
    config = tmp_path / "server_config.json"
    config.write_text(
        json.dumps(
            {
                "CLUSTER_NAME": "alpha",
                "REGION": REGION,
                "WORKER_AMI": "ami-12345678",
                "SUBNET_ID": "subnet-12345678",
                "WORKER_SECURITY_GROUPS": ["sg-1"],
                "KEY_NAME": "k",
                "SHARED_STORAGE": "efs",
                "SHARED_FILE_SYSTEM_ID": "fs-0123456789abcdef0",
                "SHARED_COURSE": "intro",
                "SHARED_DROPBOX": True,
            }
        )
    )
    spawner = SharedFolderMixin(server_config_file=str(config), staff_groups=["admins", "tas"])

    def user(admin: bool, *groups: str) -> Any:
        return SimpleNamespace(admin=admin, groups=[SimpleNamespace(name=g) for g in groups])

    student = spawner.shared_folder(user(False, "students"))
    assert student is not None
    assert (student.file_system_id, student.course, student.dropbox) == (
        "fs-0123456789abcdef0",
        "intro",
        True,
    )
    assert student.staff is False
    assert spawner.shared_folder(user(True)).staff is True  # type: ignore[union-attr]
    assert spawner.shared_folder(user(False, "tas")).staff is True  # type: ignore[union-attr]
    assert spawner.shared_folder(user(False, "admins")).staff is True  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the agent

FS_ID = "fs-0123456789abcdef0"


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


def _shared(staff: bool, dropbox: bool = True, course: str = "intro") -> dict[str, Any]:
    return {
        "file_system_id": FS_ID,
        "region": REGION,
        "course": course,
        "staff": staff,
        "dropbox": dropbox,
    }


def _write(path: Path) -> int:
    try:
        path.write_text("mine")
    except OSError as exc:
        return exc.errno
    return 0


@needs_root
def test_the_agent_mounts_the_shared_folder_read_only_for_students(
    worker: Worker, tmp_path: Path
) -> None:
    efs = tmp_path / "efs" / FS_ID
    (efs / "week1").mkdir(parents=True)
    (efs / "week1" / "notes.md").write_text("released")
    (efs / "intro" / "dropbox" / "carol").mkdir(parents=True)  # another student's
    (efs / "intro" / "dropbox" / "carol" / "answer.txt").write_text("carol's")
    shared = worker.root / "srv" / "shared"

    started = worker.start(worker.request("bob", shared=_shared(staff=False)))
    assert started.returncode == 0, started.stderr
    # Every student's instance runs them as the same uid: only the mounts keep
    # another student's dropbox out of sight.
    assert sorted(os.listdir(shared / "intro" / "dropbox")) == ["bob"]
    assert not (shared / "intro" / "dropbox" / "carol").exists()
    assert _write(shared / "intro" / "dropbox" / "eve.txt") == errno.EROFS
    assert (shared / "week1" / "notes.md").read_text() == "released"
    assert _write(shared / "week1" / "notes.md") == errno.EROFS
    assert _write(shared / "new.txt") == errno.EROFS
    assert _write(shared / "intro" / "dropbox" / "bob" / "answer.txt") == 0
    assert (efs / "intro" / "dropbox" / "bob" / "answer.txt").read_text() == "mine"
    home_link = worker.root / "home" / "bob" / "shared"
    assert os.readlink(home_link) == str(shared)  # Jupyter's file browser shows it

    stopped = worker.run("stop", "--user", "bob", "--timeout", "2")
    assert stopped.returncode == 0, stopped.stderr
    assert mounts_under(worker.root) == []
    assert not (shared / "week1").exists()  # the mount point, empty again


@needs_root
def test_every_courses_dropboxes_are_masked_for_a_student_whatever_this_start_says(
    worker: Worker, tmp_path: Path
) -> None:
    """Dropboxes turned off since, and last term's course on the same file system,
    still hold students' files; a `dropbox` that is a symlink or a file is skipped,
    never followed."""
    efs = tmp_path / "efs" / FS_ID
    (efs / "intro" / "dropbox" / "carol").mkdir(parents=True)
    (efs / "intro" / "dropbox" / "carol" / "answer.txt").write_text("carol's")
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    (efs / "linked").mkdir()
    (efs / "linked" / "dropbox").symlink_to(outside)  # planted by staff
    (efs / "plain").mkdir()
    (efs / "plain" / "dropbox").write_text("a file")
    (efs / "toplink").symlink_to(outside)
    carol = worker.root / "srv" / "shared" / "intro" / "dropbox" / "carol"
    try:
        for shared in (_shared(False, dropbox=False), _shared(False, course="intro2")):
            started = worker.start(worker.request("bob", shared=shared))
            assert started.returncode == 0, started.stderr
            assert not carol.exists(), shared
            assert os.listdir(carol.parent) == []
            assert mounts_under(outside) == []
            assert (outside / "secret").is_dir()
        assert os.listdir(worker.root / "srv" / "shared" / "intro2" / "dropbox") == ["bob"]
        started = worker.start(worker.request("tina", shared=_shared(True)))
        assert started.returncode == 0, started.stderr
        assert (carol / "answer.txt").read_text() == "carol's"  # staff see every box
    finally:
        unmount_under(outside)  # what a followed symlink would have mounted over
        unmount_under(worker.root)


@needs_root
def test_no_mount_step_ever_shows_another_students_dropbox_at_srv_shared(
    worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A student's processes may already run when the agent mounts: after every mount
    or umount the agent runs, /srv/shared must not show carol's dropbox. The test's
    folder is a shared mount, as / is under systemd (`mount --move` refuses that)."""
    efs = tmp_path / "efs" / FS_ID
    (efs / "intro" / "dropbox" / "carol").mkdir(parents=True)
    (efs / "intro" / "dropbox" / "carol" / "answer.txt").write_text("carol's")
    shared = worker.root / "srv" / "shared"
    seen = tmp_path / "seen.log"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for tool in ("mount", "umount"):
        real = shutil.which(tool)
        (hooks / tool).write_text(
            f'#!/bin/sh\n{real} "$@"; rc=$?\n'
            f'echo "{tool} $*: $(ls -A {shared}/intro/dropbox 2>/dev/null | tr "\\n" " ")"'
            f" >> {seen}\nexit $rc\n"
        )
        (hooks / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{hooks}:{os.environ['PATH']}")
    subprocess.run(["mount", "--bind", str(tmp_path), str(tmp_path)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(tmp_path)], check=True)
        started = worker.start(worker.request("bob", shared=_shared(staff=False)))
        assert started.returncode == 0, started.stderr
        steps = seen.read_text().splitlines()
        assert not [step for step in steps if "carol" in step.partition(": ")[2]], steps
        assert any("--move" in step for step in steps), steps
        assert sorted(os.listdir(shared / "intro" / "dropbox")) == ["bob"]
        assert _write(shared / "intro" / "dropbox" / "bob" / "answer.txt") == 0
        assert mounts_under(worker.root / "var") == []  # nothing left where it was built
        assert worker.run("stop", "--user", "bob", "--timeout", "2").returncode == 0
        assert mounts_under(worker.root) == []
    finally:
        unmount_under(worker.root)
        subprocess.run(["umount", "-l", str(tmp_path)], check=False)


@needs_root
def test_staff_write_the_shared_folder_and_students_get_no_dropbox_without_it(
    worker: Worker, tmp_path: Path
) -> None:
    efs = tmp_path / "efs" / FS_ID
    efs.mkdir(parents=True)
    shared = worker.root / "srv" / "shared"
    started = worker.start(worker.request("tina", shared=_shared(staff=True)))
    assert started.returncode == 0, started.stderr
    assert _write(shared / "intro" / "solutions.md") == 0
    assert (efs / "intro" / "solutions.md").read_text() == "mine"

    # The next start is a student's without dropboxes: the staff mount is replaced.
    started = worker.start(worker.request("sam", shared=_shared(staff=False, dropbox=False)))
    assert started.returncode == 0, started.stderr
    assert (shared / "intro" / "solutions.md").read_text() == "mine"
    assert _write(shared / "intro" / "sam.txt") == errno.EROFS
    assert not (efs / "intro" / "dropbox").exists()
    assert len(mounts_under(worker.root)) == 1


@pytest.mark.parametrize(
    ("shared", "says"),
    [
        ({**_shared(False), "course": "../etc"}, "invalid shared"),
        ({**_shared(False), "file_system_id": "fs-x; rm -rf /"}, "invalid shared"),
        ({**_shared(False), "region": "us-east-1 -o x"}, "invalid shared"),
        ({**_shared(False), "staff": "yes"}, "invalid shared"),
    ],
)
def test_the_agent_refuses_a_bad_shared_folder_before_anything(
    worker: Worker, shared: dict[str, Any], says: str
) -> None:
    result = worker.start(worker.request("bob", shared=shared))
    assert result.returncode == 2 and result.stderr.strip().startswith(
        f"cloudjhub-worker: {says}"
    ), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (worker.root / "srv").exists()


@needs_root
def test_a_file_system_the_local_cloud_does_not_have_fails_the_start(worker: Worker) -> None:
    result = worker.start(worker.request("bob", shared=_shared(False)))
    assert result.returncode == 1
    assert f"the local cloud has no file system {FS_ID}" in result.stderr


# --------------------------------------------------------------------------- release


def _local_cluster(tmp_path: Path) -> tuple[Path, Path]:
    """A local cloud's state dir: server_config.json with shared storage, its EFS dir."""
    config = tmp_path / "state" / "server_config.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps(
            {
                "CLUSTER_NAME": "demo",
                "REGION": REGION,
                "WORKER_AMI": "ami-12345678",
                "SUBNET_ID": "subnet-12345678",
                "WORKER_SECURITY_GROUPS": ["sg-1"],
                "KEY_NAME": "k",
                "SHARED_STORAGE": "efs",
                "SHARED_FILE_SYSTEM_ID": FS_ID,
                "SHARED_COURSE": "demo",
            }
        )
    )
    efs = config.parent / "efs" / FS_ID
    efs.mkdir(parents=True)
    return config, efs


def _course(tmp_path: Path) -> Path:
    folder = tmp_path / "week1"
    (folder / "data").mkdir(parents=True)
    (folder / "intro.ipynb").write_text('{"cells": []}')
    (folder / "data" / "table.csv").write_text("a,b\n")
    (folder / "latest").symlink_to("data/table.csv")
    return folder


def test_release_with_shared_storage_goes_into_the_shared_folder(tmp_path: Path) -> None:
    config, efs = _local_cluster(tmp_path)
    course = _course(tmp_path)
    argv = ["release", "demo", str(course), "--server-config", str(config)]
    argv += ["--releases-dir", str(tmp_path / "releases")]
    done = CliRunner().invoke(main, argv)
    assert done.exit_code == 0, done.output
    assert f"{efs / 'week1'}" in done.output
    assert (efs / "week1" / "intro.ipynb").read_text() == '{"cells": []}'
    assert os.readlink(efs / "week1" / "latest") == "data/table.csv"
    assert (efs / "week1" / "data" / "table.csv").stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "releases").exists()  # not into every home as well
    # A new version replaces the file; what else is there stays.
    (efs / "week1" / "notes.md").write_text("staff notes")
    (course / "intro.ipynb").write_text('{"cells": [1]}')
    assert CliRunner().invoke(main, argv).exit_code == 0
    assert (efs / "week1" / "intro.ipynb").read_text() == '{"cells": [1]}'
    assert (efs / "week1" / "notes.md").read_text() == "staff notes"


def test_release_never_follows_a_symlink_planted_in_the_shared_folder(tmp_path: Path) -> None:
    config, efs = _local_cluster(tmp_path)
    course = _course(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (efs / "week1").symlink_to(elsewhere)
    done = CliRunner().invoke(
        main, ["release", "demo", str(course), "--server-config", str(config)]
    )
    assert done.exit_code == 1 and "not a plain folder" in done.output, done.output
    assert list(elsewhere.iterdir()) == []


def test_a_release_escaping_its_folder_is_refused_before_the_shared_folder(
    tmp_path: Path,
) -> None:
    config, efs = _local_cluster(tmp_path)
    course = _course(tmp_path)
    (course / "escape").symlink_to("../../etc")
    done = CliRunner().invoke(
        main, ["release", "demo", str(course), "--server-config", str(config)]
    )
    assert done.exit_code == 2 and "leading out of the folder" in done.output, done.output
    assert list(efs.iterdir()) == []


def _looks(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, st.st_mode


@needs_root
@pytest.mark.parametrize("planted", ["dropbox/bob", "dropbox"])
def test_a_symlink_planted_by_staff_on_the_way_to_a_dropbox_fails_the_start(
    worker: Worker, tmp_path: Path, planted: str
) -> None:
    """Staff write the course folder: a symlink there must not make root chown or
    mount over what it points to at a student's start."""
    efs = tmp_path / "efs" / FS_ID
    (efs / "intro" / "dropbox").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bob").mkdir()
    before = (_looks(outside), _looks(outside / "bob"))
    link = efs / "intro" / planted
    if planted == "dropbox":
        link.rmdir()
    link.symlink_to(outside / "bob" if planted == "dropbox/bob" else outside)

    try:
        result = worker.start(worker.request("bob", shared=_shared(staff=False)))
        assert result.returncode == 1, result.stderr
        said = result.stderr.strip().splitlines()
        assert len(said) == 1 and "is not a plain folder" in said[0], said
        assert (_looks(outside), _looks(outside / "bob")) == before
        assert list((outside / "bob").iterdir()) == []
        assert mounts_under(worker.root) == [] and mounts_under(outside) == []
    finally:
        unmount_under(outside)  # what the old code mounted over it


@needs_root
def test_a_student_start_makes_dropbox_roots_again_and_staff_get_no_world_write(
    worker: Worker, tmp_path: Path
) -> None:
    efs = tmp_path / "efs" / FS_ID
    efs.mkdir(parents=True)
    started = worker.start(worker.request("tina", shared=_shared(staff=True)))
    assert started.returncode == 0, started.stderr
    for folder in (efs, efs / "intro"):
        st = folder.stat()
        assert st.st_uid == 0 and st.st_mode & 0o7777 == 0o3775, oct(st.st_mode)
    (efs / "intro" / "dropbox").mkdir(mode=0o777)
    os.chmod(efs / "intro" / "dropbox", 0o777)  # what a TA might leave
    os.chown(efs / "intro" / "dropbox", 4321, 4321)
    started = worker.start(worker.request("bob", shared=_shared(staff=False)))
    assert started.returncode == 0, started.stderr
    st = (efs / "intro" / "dropbox").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o755)
    assert (efs / "intro" / "dropbox" / "bob").stat().st_mode & 0o777 == 0o700
    assert worker.run("stop", "--user", "bob", "--timeout", "2").returncode == 0


def test_release_leaves_existing_folders_modes_and_refuses_the_course_name(
    tmp_path: Path,
) -> None:
    config, efs = _local_cluster(tmp_path)
    course = _course(tmp_path)
    (efs / "week1" / "data").mkdir(parents=True)
    os.chmod(efs / "week1", 0o2775)  # staff's own
    argv = ["release", "demo", str(course), "--server-config", str(config)]
    done = CliRunner().invoke(main, argv)
    assert done.exit_code == 0, done.output
    assert (efs / "week1").stat().st_mode & 0o7777 == 0o2775
    assert (efs / "week1" / "data" / "table.csv").exists()

    into_course = CliRunner().invoke(main, [*argv, "--to", "demo"])
    assert into_course.exit_code == 2, into_course.output
    assert "is the course folder" in into_course.output
    assert len(into_course.output.strip().splitlines()) == 1
    assert not (efs / "demo").exists()
