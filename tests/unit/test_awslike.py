"""The AWS behaviour layer's parts, each on its own with an injected clock."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.local.awslike import replies
from cloudjhub.local.awslike.buckets import Throttle, request_bucket
from cloudjhub.local.awslike.console import Console, hypervisor
from cloudjhub.local.awslike.faults import Faults
from cloudjhub.local.awslike.layer import Layer, filter_values, listed
from cloudjhub.local.awslike.lifecycle import Lifecycle
from cloudjhub.local.awslike.settings import (
    FAULTS,
    BadSetting,
    Behaviour,
    behaviour_from,
    parse_fault,
    parse_time_scale,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- settings -------------------------------------------------------------------


def test_fault_names_and_rates() -> None:
    assert parse_fault("InsufficientInstanceCapacity") == ("InsufficientInstanceCapacity", 1.0)
    assert parse_fault("InvalidSnapshot.InUse:0.25") == ("InvalidSnapshot.InUse", 0.25)
    behaviour = behaviour_from(["DependencyViolation", "IdempotentParameterMismatch:0.5"], "0.1")
    assert behaviour.faults == {"DependencyViolation": 1.0, "IdempotentParameterMismatch": 0.5}
    assert behaviour.pending == pytest.approx(3.0)
    assert behaviour_from([], None).time_scale == 1.0


@pytest.mark.parametrize("text", ["Nope", "InsufficientInstanceCapacity:0", "DependencyViolation:1.5",
                                  "DependencyViolation:x", "dependencyviolation", ""])  # fmt: skip
def test_unknown_faults_are_one_line_naming_what_is_known(text: str) -> None:
    with pytest.raises(BadSetting) as err:
        parse_fault(text)
    message = str(err.value)
    assert "\n" not in message
    assert all(name in message for name in FAULTS)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "fast", ""])
def test_bad_time_scales(text: str) -> None:
    with pytest.raises(BadSetting, match="positive number"):
        parse_time_scale(text)


# ---- throttling -----------------------------------------------------------------


def test_action_families_follow_the_guide() -> None:
    assert request_bucket("DescribeImages", {})[1] == (100, 20)
    assert request_bucket("DescribeInstances", {})[1] == (50, 10)  # unfiltered, unpaginated
    assert request_bucket("DescribeInstances", {"Filter.1.Name": "x"})[1] == (100, 20)
    assert request_bucket("DescribeInstances", {"MaxResults": "5"})[1] == (100, 20)
    assert request_bucket("StopInstances", {})[1] == (50, 5)  # mutating
    assert request_bucket("AuthorizeSecurityGroupIngress", {})[1] == (50, 5)
    assert request_bucket("RunInstances", {})[1] == (5, 2)  # uncategorized


def test_a_bucket_empties_then_refills_at_its_rate() -> None:
    clock = Clock()
    throttle = Throttle(clock)
    flt = {"Filter.1.Name": "tag:x"}
    assert all(throttle.admit("DescribeInstances", flt) for _ in range(100))
    assert not throttle.admit("DescribeInstances", flt)
    # Other actions have buckets of their own.
    assert throttle.admit("DescribeImages", {})
    clock.now += 0.5  # 20 tokens per second: 10 more
    assert sum(throttle.admit("DescribeInstances", flt) for _ in range(20)) == 10
    assert throttle.throttled["DescribeInstances"] == 11


def test_resource_tokens_are_counted_per_instance() -> None:
    clock = Clock()
    throttle = Throttle(clock)
    # RunInstances: 1000 resource tokens, 2 per second; requests: 5, 2 per second.
    assert throttle.admit("RunInstances", {"MaxCount": "600"})
    assert not throttle.admit("RunInstances", {"MaxCount": "600"})
    assert throttle.admit("RunInstances", {"MaxCount": "400"})
    clock.now += 1
    assert throttle.admit("RunInstances", {"MaxCount": "2"})
    assert not throttle.admit("RunInstances", {"MaxCount": "1"})


def test_run_instances_requests_are_five_then_two_a_second() -> None:
    clock = Clock()
    throttle = Throttle(clock)
    assert [throttle.admit("RunInstances", {}) for _ in range(6)] == [True] * 5 + [False]
    clock.now += 1
    assert [throttle.admit("RunInstances", {}) for _ in range(3)] == [True, True, False]


# ---- lifecycle --------------------------------------------------------------------


def test_states_in_between_last_their_time() -> None:
    clock = Clock()
    life = Lifecycle(Behaviour(time_scale=0.1), clock)
    life.launched(["i-1"])
    assert life.visible("i-1", "running") == "pending"
    clock.now += 2.9
    assert life.visible("i-1", "running") == "pending"
    clock.now += 0.2
    assert life.visible("i-1", "running") == "running"
    life.stopped(["i-1"])
    assert life.visible("i-1", "stopped") == "stopping"
    assert life.refuse_start(["i-1"], lambda _: "stopped")
    clock.now += 4.1
    assert life.visible("i-1", "stopped") == "stopped"
    assert life.refuse_start(["i-1"], lambda _: "stopped") is None
    life.terminated(["i-1"])
    assert life.visible("i-1", "terminated") == "shutting-down"
    assert life.visible("i-2", "running") == "running"  # never seen: as the endpoint says


# ---- console --------------------------------------------------------------------


def test_nitro_or_xen() -> None:
    assert hypervisor("t3.medium") == "nitro"
    assert hypervisor("m5.large") == "nitro"
    assert hypervisor("t2.micro") == "xen"
    assert hypervisor("i3.metal") == "nitro"
    assert hypervisor("m4.16xlarge") == "nitro"


def test_buffered_output_is_posted_late_and_latest_at_once() -> None:
    clock = Clock()
    console = Console(post_delay=30, clock=clock)
    assert console.output("i-1", latest=True) == ""
    console.write("i-1", "boot 1 keys")
    assert console.output("i-1", latest=True) == "boot 1 keys"
    assert console.output("i-1", latest=False) == ""
    clock.now += 30
    assert console.output("i-1", latest=False) == "boot 1 keys"
    console.write("i-1", "boot 2")  # a new boot: what Latest shows is only its output
    assert console.output("i-1", latest=True) == "boot 2"
    assert console.output("i-1", latest=False) == "boot 1 keys"
    console.write("i-2", "x" * 70000)
    assert len(console.output("i-2", latest=True)) == 64 * 1024


# ---- faults -----------------------------------------------------------------------


def test_faults_hit_at_their_rate() -> None:
    faults = Faults(Behaviour(faults={"InsufficientInstanceCapacity": 0.5}), random.Random(7))
    hits = sum(faults.hits("InsufficientInstanceCapacity") for _ in range(1000))
    assert 400 < hits < 600
    assert not any(faults.hits("DependencyViolation") for _ in range(100))
    assert faults.injected == {"InsufficientInstanceCapacity": hits}


def test_a_deregistered_images_snapshot_is_in_use_for_a_while() -> None:
    clock = Clock()
    faults = Faults(Behaviour(time_scale=0.5), clock=clock)
    faults.image_deregistered(["snap-1"])
    assert faults.snapshot_in_use("snap-1")
    assert not faults.snapshot_in_use("snap-2")
    clock.now += 10
    assert not faults.snapshot_in_use("snap-1")


# ---- replies ----------------------------------------------------------------------

NS = "http://ec2.amazonaws.com/doc/2016-11-15"


def _describe(*instances: tuple[str, str]) -> bytes:
    items = "".join(
        f"<item><reservationId>r-{i}</reservationId><instancesSet><item>"
        f"<instanceId>{i}</instanceId><instanceState><code>0</code><name>{s}</name>"
        f"</instanceState><privateIpAddress>127.0.16.4</privateIpAddress>"
        f"<networkInterfaceSet><item><privateIpAddress>127.0.16.4</privateIpAddress></item>"
        f"</networkInterfaceSet></item></instancesSet></item>"
        for i, s in instances
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><DescribeInstancesResponse xmlns="{NS}">'
        f"<reservationSet>{items}</reservationSet></DescribeInstancesResponse>"
    ).encode()


def _states(body: bytes) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body)
    ns = f"{{{NS}}}"
    return {
        str(i.findtext(f"{ns}instanceId")): str(i.findtext(f"{ns}instanceState/{ns}name"))
        for i in root.iter(f"{ns}item")
        if i.find(f"{ns}instanceState") is not None
    }


def test_states_are_rewritten_and_state_filters_apply_to_what_is_shown() -> None:
    body = _describe(("i-1", "running"), ("i-2", "running"), ("i-3", "terminated"))

    def shown(iid: str, actual: str) -> str:
        return {"i-1": "pending"}.get(iid, actual)

    out = replies.rewrite_states(body, shown)
    assert _states(out) == {"i-1": "pending", "i-2": "running", "i-3": "terminated"}
    assert b"<code>0</code><name>pending</name>" in out
    # A terminated instance has no private address left (its interface's is gone too).
    assert out.count(b"127.0.16.4") == 4
    only_running = replies.rewrite_states(body, shown, {"running"})
    assert _states(only_running) == {"i-2": "running"}
    assert only_running.count(b"reservationId") == 2  # empty reservations are dropped


def test_console_output_and_hypervisor_rewrites() -> None:
    body = (
        f'<GetConsoleOutputResponse xmlns="{NS}"><instanceId>i-1</instanceId>'
        "<output>c2FtcGxl</output></GetConsoleOutputResponse>"
    ).encode()
    out = replies.with_console_output(body, "keys")
    assert base64.b64encode(b"keys") in out
    assert b"output" not in replies.with_console_output(body, "")
    types = (
        f'<DescribeInstanceTypesResponse xmlns="{NS}"><instanceTypeSet><item>'
        "<instanceType>t3.medium</instanceType><hypervisor>xen</hypervisor></item>"
        "</instanceTypeSet></DescribeInstanceTypesResponse>"
    ).encode()
    assert b"<hypervisor>nitro</hypervisor>" in replies.rewrite_hypervisors(types, hypervisor)


def test_error_replies_are_what_botocore_parses() -> None:
    body = replies.error("RequestLimitExceeded", "Request limit exceeded.")
    assert b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>" in body


def test_query_lists_and_filters() -> None:
    params = {
        "InstanceId.2": "i-b",
        "InstanceId.1": "i-a",
        "Filter.1.Name": "tag:x",
        "Filter.1.Value.1": "y",
        "Filter.2.Name": "instance-state-name",
        "Filter.2.Value.1": "running",
        "Filter.2.Value.2": "pending",
    }
    assert listed(params, "InstanceId") == ["i-a", "i-b"]
    assert filter_values(params, "instance-state-name") == {"running", "pending"}
    assert filter_values(params, "vpc-id") is None


# ---- the layer's decisions ----------------------------------------------------------


@dataclass
class FakeLookups:
    instances: dict[str, Instance] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    snapshots: dict[str, list[str]] = field(default_factory=dict)

    def describe(self, ids: list[str]) -> list[Instance]:
        return [self.instances[i] for i in ids if i in self.instances]

    def instances_in_group(self, group_id: str) -> list[Instance]:
        return [self.instances[i] for i in self.groups.get(group_id, [])]

    def image_snapshots(self, image_id: str) -> list[str]:
        return self.snapshots.get(image_id, [])


def _instance(iid: str, state: str, kind: str = "t3.medium") -> Instance:
    return Instance(iid, state, kind, "127.0.16.4", None, "us-east-1a")


def _layer(faults: dict[str, float], lookups: FakeLookups, clock: Clock) -> Layer:
    return Layer(Behaviour(time_scale=0.1, faults=faults), lookups, clock)  # type: ignore[arg-type]


def _code(answer: object) -> str:
    assert answer is not None
    body = answer.body  # type: ignore[attr-defined]
    return body.split(b"<Code>")[1].split(b"</Code>")[0].decode()


def test_the_layer_refuses_what_aws_refuses() -> None:
    clock = Clock()
    lookups = FakeLookups(
        {"i-1": _instance("i-1", "stopped"), "i-x": _instance("i-x", "running", "t2.micro")}
    )
    layer = _layer({}, lookups, clock)
    layer.lifecycle.stopped(["i-1"])
    refused = layer.before("StartInstances", {"InstanceId.1": "i-1"}, internal=False)
    assert _code(refused) == "IncorrectInstanceState"
    latest = layer.before("GetConsoleOutput", {"InstanceId": "i-x", "Latest": "true"}, False)
    assert _code(latest) == "UnsupportedOperation"
    assert layer.before("GetConsoleOutput", {"InstanceId": "i-x"}, False) is None
    # The fleet emulator (AWS itself) is never refused, throttled or faulted.
    assert layer.before("StartInstances", {"InstanceId.1": "i-1"}, internal=True) is None


def test_faults_apply_only_where_their_condition_holds() -> None:
    clock = Clock()
    lookups = FakeLookups(
        {"i-1": _instance("i-1", "terminated"), "i-2": _instance("i-2", "running")},
        groups={"sg-used": ["i-1", "i-2"], "sg-free": ["i-1"]},
        snapshots={"ami-1": ["snap-1"]},
    )
    every = dict.fromkeys(FAULTS, 1.0)
    layer = _layer(every, lookups, clock)
    assert _code(layer.before("RunInstances", {"InstanceType": "t3.medium"}, False)) == (
        "InsufficientInstanceCapacity"
    )
    assert _code(layer.before("DeleteSecurityGroup", {"GroupId": "sg-used"}, False)) == (
        "DependencyViolation"
    )
    assert layer.before("DeleteSecurityGroup", {"GroupId": "sg-free"}, False) is None
    layer.lifecycle.terminated(["i-1"])  # still shutting down: still uses its groups
    assert _code(layer.before("DeleteSecurityGroup", {"GroupId": "sg-free"}, False)) == (
        "DependencyViolation"
    )
    assert layer.before("DeleteSnapshot", {"SnapshotId": "snap-1"}, False) is None
    assert layer.before("DeregisterImage", {"ImageId": "ami-1"}, False) is None
    assert _code(layer.before("DeleteSnapshot", {"SnapshotId": "snap-1"}, False)) == (
        "InvalidSnapshot.InUse"
    )
    clock.now += 2.1  # 20 s at time scale 0.1
    assert layer.before("DeleteSnapshot", {"SnapshotId": "snap-1"}, False) is None


def test_client_tokens_replay_and_conflict() -> None:
    clock = Clock()
    run = {"Action": "RunInstances", "ImageId": "ami-1", "ClientToken": "t1", "MaxCount": "1"}
    reply = _describe(("i-9", "pending"))
    for faults in ({}, {"IdempotentParameterMismatch": 1.0}):
        layer = _layer(faults, FakeLookups(), clock)
        assert layer.before("RunInstances", run, False) is None
        layer.after("RunInstances", run, reply)
        replay = layer.before("RunInstances", {**run, "Version": "2016-11-15"}, False)
        assert replay is not None and replay.body == reply
        other = layer.before("RunInstances", {**run, "InstanceType": "t3.large"}, False)
        if faults:
            assert _code(other) == "IdempotentParameterMismatch"
        else:
            assert other is None  # not checked unless the fault is asked for
        clock.now += 10  # the run-instances bucket refills


def test_state_changes_begin_transitions_only_when_they_change_something() -> None:
    clock = Clock()
    layer = _layer({}, FakeLookups(), clock)
    stop = (
        f'<StopInstancesResponse xmlns="{NS}"><instancesSet>'
        "<item><instanceId>i-1</instanceId><currentState><code>64</code><name>stopping</name>"
        "</currentState><previousState><code>16</code><name>running</name></previousState></item>"
        "<item><instanceId>i-2</instanceId><currentState><code>80</code><name>stopped</name>"
        "</currentState><previousState><code>80</code><name>stopped</name></previousState></item>"
        "</instancesSet></StopInstancesResponse>"
    ).encode()
    layer.after("StopInstances", {}, stop)
    assert layer.lifecycle.visible("i-1", "stopped") == "stopping"
    assert layer.lifecycle.visible("i-2", "stopped") == "stopped"


# ---- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--like-aws", "--fault", "Nope"], "unknown fault"),
        (["--like-aws", "--fault", "DependencyViolation:7"], "RATE"),
        (["--like-aws", "--time-scale", "zero"], "positive number"),
        (["--fault", "DependencyViolation"], "only apply with --like-aws"),
        (["--time-scale", "0.1"], "only apply with --like-aws"),
    ],
)
def test_bad_values_are_one_line_and_exit_2_before_anything_starts(
    args: list[str], says: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from cloudjhub.cli import main

    state_dir = f"{tmp_path}/never"
    result = CliRunner().invoke(main, ["demo", "--state-dir", state_dir, *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.output
    assert not Path(state_dir).exists()


def test_spot_faults_hit_only_spot_launches() -> None:
    layer = _layer({"MaxSpotInstanceCountExceeded": 1.0}, FakeLookups(), Clock())
    on_demand = {"InstanceType": "t3.large"}
    assert layer.before("RunInstances", on_demand, False) is None
    spot = {**on_demand, "InstanceMarketOptions.MarketType": "spot"}
    assert _code(layer.before("RunInstances", spot, False)) == "MaxSpotInstanceCountExceeded"
