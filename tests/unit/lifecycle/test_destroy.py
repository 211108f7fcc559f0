"""`cloudjhub destroy`, and the delete guards under it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from cloudjhub import waiting
from cloudjhub.aws import client as ec2_module
from cloudjhub.aws.client import NotOurs
from cloudjhub.launch import teardown
from tests.helpers import ApiCalls
from tests.unit.conftest import SshKey
from tests.unit.lifecycle.conftest import (
    CliCloud,
    World,
    inventory,
    run,
    without,
)

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
