"""Hub metrics and the usage log, through `cloudjhub demo`: scrape `/hub/metrics` with
the admin token before and after spawns, stops, a cull and a self-stop."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.system.conftest import Demo

pytestmark = [pytest.mark.system, pytest.mark.timeout(150)]

IDLE_TIMEOUT = 15
VPC_CIDR = "127.186.0.0/16"
# The demo's InstanceSpawner.fleet_refresh_interval: after this long, poll() sees EC2 anew.
FLEET_REFRESH = 5

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def demo(demo_factory: Callable[[int, str], Demo]) -> Demo:
    return demo_factory(IDLE_TIMEOUT, VPC_CIDR)


def scrape(demo: Demo) -> Samples:
    reply = demo.request("GET", f"{demo.hub_url}hub/metrics")
    assert reply.status_code == 200, reply.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def usage(demo: Demo, user: str) -> list[tuple[str, str]]:
    path = Path(demo.facts()["usage_log"])
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [(e["event"], e["reason"]) for e in lines if e["user"] == user]


def test_spawn_and_stop_move_the_metrics_and_the_usage_log(demo: Demo) -> None:
    before = scrape(demo)
    demo.start("mia")
    started = scrape(demo)
    for phase in ("launch", "boot", "connect", "jupyter"):
        name = "cloudjhub_spawn_phase_seconds_count"
        assert value(started, name, phase=phase) == value(before, name, phase=phase) + 1, phase
    calls = "cloudjhub_ec2_api_calls_total"
    ran = {"action": "run_instances", "outcome": "ok"}
    assert value(started, calls, **ran) == value(before, calls, **ran) + 1
    assert value(started, "cloudjhub_instances", state="running") >= 1

    demo.stop("mia")
    demo.wait_state("mia", "stopped")
    stopped = scrape(demo)
    stops = "cloudjhub_server_stops_total"
    assert value(stopped, stops, reason="request") == value(started, stops, reason="request") + 1
    assert value(stopped, "cloudjhub_instances", state="running") == (
        value(started, "cloudjhub_instances", state="running") - 1
    )

    demo.start("mia")  # the same instance, started again
    resumed = scrape(demo)
    name = "cloudjhub_spawn_phase_seconds_count"
    assert value(resumed, name, phase="start") == value(stopped, name, phase="start") + 1
    assert value(resumed, name, phase="launch") == value(stopped, name, phase="launch")
    demo.stop("mia")
    assert usage(demo, "mia") == [
        ("start", "launch"),
        ("stop", "request"),
        ("start", "resume"),
        ("stop", "request"),
    ]


def test_a_cull_and_a_self_stop_are_told_apart(demo: Demo) -> None:
    demo.start("ned")
    demo.start("ola")
    before = scrape(demo)

    # ola's instance stops behind the hub's back (on AWS: a shutdown on the instance).
    (inst,) = demo.instances("ola")
    demo.ec2().stop_instances(InstanceIds=[inst["InstanceId"]])
    time.sleep(FLEET_REFRESH + 1)
    demo.stop("ola")  # the hub polls first, sees it stopped, and only cleans up
    after_self = scrape(demo)
    assert value(after_self, "cloudjhub_self_stops_total") == (
        value(before, "cloudjhub_self_stops_total") + 1
    )
    stops = "cloudjhub_server_stops_total"
    assert value(after_self, stops, reason="request") == value(before, stops, reason="request")

    # ned does nothing: the culler deletes his server, and the stop counts as idle.
    deadline = time.monotonic() + IDLE_TIMEOUT * 4 + 30
    while demo.server("ned") is not None:
        assert time.monotonic() < deadline, "ned's idle server was not culled"
        time.sleep(1)
    demo.wait_state("ned", "stopped")
    culled = scrape(demo)
    assert value(culled, stops, reason="idle") == value(before, stops, reason="idle") + 1
    assert value(culled, stops, reason="request") == value(before, stops, reason="request")
    assert usage(demo, "ola") == [("start", "launch"), ("stop", "self")]
    assert usage(demo, "ned") == [("start", "launch"), ("stop", "idle")]
