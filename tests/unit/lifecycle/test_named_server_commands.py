"""`status`, `terminate-workers` and `destroy` with a named server's worker and home
volume (tagged `cloudjhub:server`): shown with their server, and treated like any
worker and home of the cluster."""

from __future__ import annotations

import json
import uuid

from cloudjhub.aws.hub import WorkerSpec
from tests.unit.lifecycle.conftest import CliCloud, World, inventory, run


def named_server(world: World) -> tuple[str, str]:
    """A named server "gpu" of alice in alpha: its worker and its home volume."""
    ec2, alpha = world.ec2, world.alpha
    reply = ec2.client.describe_instances(InstanceIds=[alpha.workers["alice"]])
    subnet = reply["Reservations"][0]["Instances"][0]["SubnetId"]
    spec = WorkerSpec(alpha.image, "t3.medium", subnet, (alpha.groups.worker,), alpha.key_pair, 8)
    worker = ec2.launch_worker("alice", spec, f"t-{uuid.uuid4().hex}", server="gpu")
    home = ec2.create_home_volume("alice", 1, worker.availability_zone, server="gpu")
    return worker.id, home


def test_status_shows_each_server(world: World, cli_cloud: CliCloud) -> None:
    gpu, _home = named_server(world)

    table = run("status", "alpha")
    data = json.loads(run("status", "alpha", "--json").output)

    assert table.exit_code == 0, table.output
    rows = [line.split() for line in table.output.splitlines()[2:]]
    alice = {row[1]: row[2] for row in rows if row[0] == "alice"}
    assert alice == {"-": world.alpha.workers["alice"], "gpu": gpu}  # default, named
    by_id = {row["instance_id"]: row for row in data["instances"]}
    assert by_id[gpu]["server"] == "gpu" and by_id[gpu]["user"] == "alice"
    assert by_id[world.alpha.workers["alice"]]["server"] == ""


def test_terminate_workers_and_destroy_take_named_servers_too(
    world: World, cli_cloud: CliCloud
) -> None:
    gpu, home = named_server(world)

    listed = run("terminate-workers", "alpha", "--dry-run", "--delete-home-volumes")
    assert listed.exit_code == 0, listed.output
    assert any(gpu in line and "alice/gpu" in line for line in listed.output.splitlines())
    assert any(home in line and "home of alice/gpu" in line for line in listed.output.splitlines())

    result = run("destroy", "alpha", "--yes", "--delete-home-volumes")

    assert result.exit_code == 0, result.output
    after = inventory(world.ec2.client)
    assert after["instances"][gpu] == "terminated"
    assert home not in after["volumes"]
