"""A failed launch's rollback: newest first, with teardown's deletes and their retries."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.launch.groups import ensure_security_groups
from cloudjhub.launch.image import build_worker_image
from cloudjhub.launch.teardown import Failure
from cloudjhub.launch.undo import UndoLog
from tests.unit.conftest import Network


def test_rollback_is_newest_first_and_says_how_each_step_went(ec2: LocalCloudEc2) -> None:
    said: list[str] = []
    log = UndoLog(ec2, said.append, timeout=1, poll=0)
    log.add("the first thing", lambda: [])
    log.add("the second thing", lambda: [Failure("instance i-1", "still running after 1s")])

    def broken() -> list[Failure]:
        raise RuntimeError("no route to EC2")

    log.add("the third thing", broken)

    log.roll_back()

    assert said == [
        "  could NOT roll back the third thing: no route to EC2",
        "  could NOT roll back the second thing: instance i-1: still running after 1s",
        "  rolled back the first thing",
    ]


def test_keeping_says_what_stays(ec2: LocalCloudEc2) -> None:
    said: list[str] = []
    log = UndoLog(ec2, said.append, timeout=1, poll=0)
    log.add("security groups made by this run", lambda: pytest.fail("kept, not undone"))
    log.keep()
    assert said == ["  kept security groups made by this run"]


def _refuse_deletes(ec2: LocalCloudEc2, group_id: str, refusals: int) -> list[str]:
    """DependencyViolation for the first deletes of one group, as AWS answers while a
    just-terminated instance's network interface lingers (moto never does)."""
    attempts: list[str] = []

    def hook(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if params["body"]["GroupId"] != group_id:
            return None
        attempts.append(group_id)
        if len(attempts) > refusals:
            return None
        error = {"Error": {"Code": "DependencyViolation", "Message": "dependent object"}}
        return AWSResponse("https://ec2.amazonaws.com/", 400, {}, None), error

    ec2.client.meta.events.register("before-call.ec2.DeleteSecurityGroup", hook)
    return attempts


def _group_ids(ec2: LocalCloudEc2) -> set[str]:
    return {g["GroupId"] for g in ec2.client.describe_security_groups()["SecurityGroups"]}


def test_rolling_back_groups_retries_what_a_dependency_blocks(
    ec2: LocalCloudEc2, network: Network
) -> None:
    made: dict[str, str] = {}
    groups = ensure_security_groups(ec2, network.vpc_id, created=made)
    assert list(made.values()) == ["alpha-manager", "alpha-manager2", "alpha-worker"]
    attempts = _refuse_deletes(ec2, groups.worker, refusals=2)
    said: list[str] = []
    log = UndoLog(ec2, said.append, timeout=30, poll=0)
    log.add("security groups made by this run", lambda: log.groups(made))

    log.roll_back()

    assert said[-1] == "  rolled back security groups made by this run", said
    assert attempts == [groups.worker] * 3  # refused twice, then deleted
    assert not set(made) & _group_ids(ec2)
    deleted = [line for line in said if "deleted security group" in line]
    assert [line.split()[-1] for line in deleted] == [
        "(alpha-manager2)",
        "(alpha-manager)",
        "(alpha-worker)",  # newest first, the blocked one once its dependency cleared
    ]


def test_a_group_still_blocked_at_the_launch_timeout_is_not_rolled_back(
    ec2: LocalCloudEc2, network: Network
) -> None:
    made: dict[str, str] = {}
    groups = ensure_security_groups(ec2, network.vpc_id, created=made)
    _refuse_deletes(ec2, groups.manager, refusals=10**6)
    said: list[str] = []
    log = UndoLog(ec2, said.append, timeout=0, poll=0)
    log.add("security groups made by this run", lambda: log.groups(made))

    log.roll_back()

    assert said[-1].startswith(
        f"  could NOT roll back security groups made by this run: "
        f"security group {groups.manager} (alpha-manager): "
    )
    assert "DependencyViolation" in said[-1]
    assert _group_ids(ec2) & set(made) == {groups.manager}


def test_rolling_back_the_image_deletes_its_snapshots(
    ec2: LocalCloudEc2, network: Network, worker_ami: str, key_name: str
) -> None:
    groups = ensure_security_groups(ec2, network.vpc_id)
    made: list[str] = []
    image = build_worker_image(
        ec2,
        worker_ami,
        "t3.micro",
        network.subnet_id,
        [groups.manager],
        key_name,
        progress=lambda _: None,
        poll=0,
        on_image=made.append,
    )
    snapshots = [s["SnapshotId"] for s in ec2.cluster_snapshots()]
    assert made == [image] and snapshots
    said: list[str] = []
    log = UndoLog(ec2, said.append, timeout=1, poll=0)
    log.add("the worker image made by this run", lambda: log.images(made))

    log.roll_back()

    assert said[-1] == "  rolled back the worker image made by this run", said
    assert ec2.image_state(image) == "missing"
    left = ec2.client.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not {s["SnapshotId"] for s in left} & set(snapshots)
