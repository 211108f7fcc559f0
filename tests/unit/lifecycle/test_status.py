"""`cloudjhub status`, and the AWS options the lifecycle commands share."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from cloudjhub.aws.client import Instance
from cloudjhub.cli import main
from cloudjhub.commands.status import duration, status_rows
from cloudjhub.tags import CLUSTER_TAG, ROLE_TAG, USER_TAG
from tests.unit.lifecycle.conftest import (
    CliCloud,
    World,
    run,
)

# ---- status -------------------------------------------------------------------------


def test_status_lists_workers_and_manager(world: World, cli_cloud: CliCloud) -> None:
    result = run("status", "alpha")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "USER",
        "SERVER",
        "INSTANCE",
        "STATE",
        "TYPE",
        "HOME",
        "LAUNCHED",
        "UPTIME",
    ]
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
    assert json.loads(as_json.output) == {
        "cluster": "gamma",
        "instances": [],
        "pool": {"ready": 0, "states": {}},
    }
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
    assert bad_url.exit_code == 2 and "Invalid endpoint: not a url" in bad_url.output


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
