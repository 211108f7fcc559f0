"""`cloudjhub prewarm` through click against moto: the tag on the manager, the keeper
obeying it until it expires, `--cancel`, and bad input (one line, exit 2, nothing changed)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.pool_keeper import Keeper, one_off_reader
from cloudjhub.pool_schedule import OneOff, PoolPlan, PoolTarget
from cloudjhub.tags import PREWARM_TAG, Role, tags_for
from tests.unit.lifecycle.conftest import CliCloud, run
from tests.unit.test_warm_pool import members


def manager_of(ec2: LocalCloudEc2, spec: WorkerSpec) -> str:
    inst = ec2.run_instance(
        spec.image_id,
        "t3.micro",
        spec.subnet_id,
        list(spec.security_group_ids),
        spec.key_name,
        tags_for(ec2.cluster, Role.MANAGER),
    )
    return inst.id


def tag_on(ec2: LocalCloudEc2, instance_id: str) -> str | None:
    [inst] = ec2.describe([instance_id])
    return inst.tags.get(PREWARM_TAG)


@pytest.fixture
def manager(ec2: LocalCloudEc2, spec: WorkerSpec) -> str:
    return manager_of(ec2, spec)


def test_prewarm_tags_the_manager_and_the_keeper_obeys_until_it_expires(
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    spec: WorkerSpec,
    manager: str,
    cli_cloud: CliCloud,
) -> None:
    beta_manager = other_ec2.run_instance(
        spec.image_id, "t3.micro", spec.subnet_id, [], spec.key_name, tags_for("beta", Role.MANAGER)
    ).id
    began = time.time()

    result = run("prewarm", "alpha", "--size", "2", "--state", "running", "--for", "600")

    assert result.exit_code == 0, result.output
    value = tag_on(ec2, manager)
    assert value is not None and value.startswith("size=2,state=running,until=")
    window = OneOff.from_tag(value)
    assert began + 599 <= window.until.timestamp() <= time.time() + 601
    assert tag_on(other_ec2, beta_manager) is None  # another cluster's manager: untouched
    assert [op for op in cli_cloud.mutations()] == ["CreateTags"]
    assert cli_cloud.named("CreateTags")[0]["ResourceId.1"] == manager

    now = [began]
    plan = PoolPlan(PoolTarget(0, "stopped"), one_off=one_off_reader(ec2))
    pool = Keeper(ec2, spec, plan, clock=lambda: now[0])
    assert len(pool.round().launched) == 2  # the keeper obeys it
    assert {m.state for m in members(ec2)} == {"running"}
    now[0] = window.until.timestamp()  # expired: back to the base size, 0
    assert len(pool.round().terminated) == 2
    assert members(ec2) == []


def test_prewarm_json_and_cancel(ec2: LocalCloudEc2, manager: str, cli_cloud: CliCloud) -> None:
    result = run("prewarm", "alpha", "--size", "5", "--json")
    assert result.exit_code == 0, result.output
    said = json.loads(result.output)
    assert said["cluster"] == "alpha" and said["managers"] == [manager]
    assert said["prewarm"]["size"] == 5 and said["prewarm"]["state"] == "stopped"  # default
    until = datetime.fromisoformat(said["prewarm"]["until"])
    assert abs(until.timestamp() - (time.time() + 3600)) < 60  # --for defaults to an hour
    assert until.tzinfo is not None and until.utcoffset() == UTC.utcoffset(None)

    for cancel in (["--cancel"], ["--size", "0"]):
        run("prewarm", "alpha", "--size", "5")
        done = run("prewarm", "alpha", *cancel)
        assert done.exit_code == 0, done.output
        assert tag_on(ec2, manager) is None
    assert "DeleteTags" in cli_cloud.mutations()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--size", "-1"], "'--size': -1 is not in the range"),
        (["--size", "1001"], "'--size': 1001 is not in the range"),
        (["--size", "3", "--state", "warm"], "'--state': 'warm' is not one of"),
        (["--size", "3", "--for", "0"], "'--for': 0 is not in the range"),
        (["--size", "3", "--for", "-60"], "'--for': -60 is not in the range"),
        (["--size", "3", "--for", "soon"], "'--for': 'soon' is not a valid integer"),
        (["--size", "3", "--for", "nan"], "'--for': 'nan' is not a valid integer"),
        ([], "--size is required"),
        (["--size", "3", "--cancel"], "--cancel and --size N"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_changed(
    ec2: LocalCloudEc2, manager: str, cli_cloud: CliCloud, args: list[str], says: str
) -> None:
    result = run("prewarm", "alpha", *args)

    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert says in line and "Traceback" not in result.output
    assert cli_cloud.mutations() == []
    assert tag_on(ec2, manager) is None


def test_a_cluster_without_a_manager_is_refused(ec2: LocalCloudEc2, cli_cloud: CliCloud) -> None:
    result = run("prewarm", "alpha", "--size", "3")
    assert result.exit_code == 1
    assert "cluster alpha has no manager instance" in result.output
    assert cli_cloud.mutations() == []
