"""The main paths under `cloudjhub demo --like-aws`: AWS's state durations, console,
throttling, private-IP reuse, an injected capacity shortage, and spot (a refused
request falling back to on-demand; a spot instance AWS reclaims), with a small time
scale. One demo for the module."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cloudjhub.aws.client import RETRY_CONFIG
from cloudjhub.hub.database import WAL_SUFFIXES
from tests.system.conftest import Demo, running_demo

pytestmark = pytest.mark.system

IDLE_TIMEOUT = 15
VPC_CIDR = "127.205.0.0/16"
# pending 3 s, stopping 4 s, shutting-down 3 s: long enough to be seen.
TIME_SCALE = "0.1"
# `--config`: users named spot-* get a spot profile (with the home volume spot needs).
HUB_CONFIG = """
SPOT = {
    "display_name": "Spot",
    "slug": "spot",
    "default": True,
    "spawner_override": {"market": "spot", "user_home_ebs_size": 1},
}


async def profiles_for(spawner):
    return [SPOT] if spawner.user.name.startswith("spot-") else []


c.InstanceSpawner.profile_list = profiles_for
# The hub notices an instance AWS took back at its next poll (JupyterHub's default: 30 s).
c.InstanceSpawner.poll_interval = 2
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    state = tmp_path_factory.mktemp("like-aws")
    config = state.parent / f"{state.name}-hub-config.py"
    config.write_text(HUB_CONFIG)
    with running_demo(
        state,
        IDLE_TIMEOUT,
        VPC_CIDR,
        "--like-aws",
        "--time-scale",
        TIME_SCALE,
        "--config",
        str(config),
    ) as running:
        yield running


def control(demo: Demo) -> str:
    return str(demo.facts()["like_aws_control_url"])


def retrying_ec2(demo: Demo) -> Any:
    """A client as the hub makes them: botocore's adaptive retries."""
    return demo.ec2(config=RETRY_CONFIG)


def test_first_spawn_and_a_restart_while_the_instance_is_still_stopping(demo: Demo) -> None:
    first = demo.start("alice")
    (instance,) = demo.instances("alice")
    note = {"type": "file", "format": "text", "content": f"written {uuid.uuid4()}"}
    put = demo.request("PUT", f"{demo.hub_url}user/alice/api/contents/note.txt", json=note)
    assert put.status_code in (200, 201), put.text

    demo.stop("alice")
    # AWS takes its time to stop; a start now would be refused with IncorrectInstanceState,
    # so the spawner waits for 'stopped' before starting again.
    assert demo.state_of("alice") == "stopping"
    again = demo.start("alice")
    (restarted,) = demo.instances("alice")
    assert restarted["InstanceId"] == instance["InstanceId"]
    got = demo.request("GET", f"{demo.hub_url}user/alice/api/contents/note.txt").json()
    assert got["content"] == note["content"]
    print(f"\nlike-aws spawn-to-ready: first start {first:.1f}s, restart {again:.1f}s")
    demo.stop("alice")


def test_an_idle_server_is_culled_and_its_instance_stopped(demo: Demo) -> None:
    demo.start("carol")
    deadline = time.monotonic() + 4 * IDLE_TIMEOUT
    while demo.server("carol") is not None:
        assert time.monotonic() < deadline, "carol's idle server was not culled"
        time.sleep(1)
    demo.wait_state("carol", "stopped", timeout=30)


def test_a_burst_is_throttled_and_retries_carry_it(demo: Demo) -> None:
    before = requests.get(control(demo), timeout=10).json()["throttled"]
    ec2 = retrying_ec2(demo)
    flt = [{"Name": "tag:cloudjhub:cluster", "Values": ["demo"]}]

    def call(_: int) -> int:
        return len(ec2.describe_instances(Filters=flt)["Reservations"])

    # Bursts until the bucket runs dry: how many calls that takes depends on how fast
    # this machine answers (signed requests to moto are slower than unsigned ones).
    for _burst in range(6):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, range(160)))
        assert len(results) == 160  # every call succeeded, retries carried the throttled
        after = requests.get(control(demo), timeout=10).json()["throttled"]
        if after.get("DescribeInstances", 0) > before.get("DescribeInstances", 0):
            break
    assert after.get("DescribeInstances", 0) > before.get("DescribeInstances", 0)


def test_insufficient_capacity_reaches_the_user_then_a_retry_works(demo: Demo) -> None:
    requests.put(
        control(demo), json={"faults": {"InsufficientInstanceCapacity": 1}}, timeout=10
    ).raise_for_status()
    try:
        demo.request("POST", "/users/dave")
        reply = demo.request("POST", "/users/dave/server")
        assert reply.status_code in (201, 202, 500), reply.text
        log = demo.state_dir / "jupyterhub.log"
        deadline = time.monotonic() + 90
        while "no spare t3.medium capacity" not in log.read_text():
            assert time.monotonic() < deadline, "the capacity message never reached the user"
            time.sleep(0.5)
        while demo.server("dave") is not None:
            assert time.monotonic() < deadline, "dave's failed spawn is still pending"
            time.sleep(0.5)
        assert demo.instances("dave") == []
    finally:
        requests.put(control(demo), json={"faults": {}}, timeout=10).raise_for_status()
    demo.start("dave")
    demo.stop("dave")


def test_a_terminated_instances_private_ip_goes_to_the_next_launch(demo: Demo) -> None:
    demo.start("erin")
    demo.stop("erin")
    (old,) = demo.instances("erin")
    demo.wait_state("erin", "stopped")
    retrying_ec2(demo).terminate_instances(InstanceIds=[old["InstanceId"]])
    assert demo.state_of("erin") == "shutting-down"
    demo.wait_state("erin", "terminated")
    demo.start("erin")
    new = [i for i in demo.instances("erin") if i["State"]["Name"] != "terminated"]
    assert len(new) == 1 and new[0]["InstanceId"] != old["InstanceId"]
    assert new[0]["PrivateIpAddress"] == old["PrivateIpAddress"]
    # The hub's pins are by instance id: the new instance has its own, and the
    # terminated one's is gone, so its key can never be held against the address.
    pins = json.loads((demo.state_dir / "host_keys.json").read_text())["instances"]
    assert new[0]["InstanceId"] in pins and old["InstanceId"] not in pins
    demo.stop("erin")


def test_a_lost_hub_database_does_not_lock_a_user_out(demo: Demo) -> None:
    """The hub loses its database; the user's instance, stopped and started, no longer
    shows its host keys on the console (AWS prints them on the first boot only). The
    new hub finds the instance by its tags and verifies it with the store's pin."""
    demo.start("frank")
    (instance,) = demo.instances("frank")
    demo.stop("frank")
    demo.wait_state("frank", "stopped")
    old_hub = demo.facts()["hub_pid"]
    # The hub's commits do not wait for the disk (hub/database.py): its database is
    # in WAL mode, so losing it means losing its log too.
    database = demo.state_dir / "jupyterhub.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    for suffix in WAL_SUFFIXES:
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    os.kill(old_hub, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while demo.facts().get("hub_pid") == old_hub:
        assert time.monotonic() < deadline, "the demo did not restart its hub"
        time.sleep(0.2)
    assert demo.request("GET", "/users/frank").status_code == 404  # a hub that knows nobody

    demo.start("frank")
    (again,) = demo.instances("frank")
    assert again["InstanceId"] == instance["InstanceId"]
    demo.stop("frank")


def start_reading_progress(demo: Demo, user: str) -> list[str]:
    """Start user's server and read the spawn page's progress (JupyterHub's progress
    API) until it is ready: its messages."""
    demo.request("POST", f"/users/{user}")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        posted = pool.submit(demo.request, "POST", f"/users/{user}/server")
        deadline = time.monotonic() + 30
        while demo.server(user) is None:  # pending: its progress can be read
            assert time.monotonic() < deadline, f"{user}'s spawn never showed as pending"
            time.sleep(0.05)
        with demo.request("GET", f"/users/{user}/server/progress", stream=True) as events:
            lines = [line for line in events.iter_lines(decode_unicode=True) if line]
        assert posted.result().status_code in (201, 202), posted.result().text
    messages = [json.loads(line.removeprefix("data:"))["message"] for line in lines]
    server = demo.server(user)
    assert server is not None and server.get("ready"), messages
    return messages


def test_a_refused_spot_request_falls_back_to_on_demand_and_says_so(demo: Demo) -> None:
    requests.put(
        control(demo), json={"faults": {"SpotMaxPriceTooLow": 1}}, timeout=10
    ).raise_for_status()
    try:
        messages = start_reading_progress(demo, "spot-ann")
    finally:
        requests.put(control(demo), json={"faults": {}}, timeout=10).raise_for_status()
    said = [m for m in messages if "AWS cannot give you a spot" in m]
    assert said == [
        "AWS cannot give you a spot t3.medium now (SpotMaxPriceTooLow); "
        "launching an on-demand one instead"
    ], messages
    (instance,) = demo.instances("spot-ann")
    assert "InstanceLifecycle" not in instance  # on-demand
    demo.stop("spot-ann")


def test_a_reclaimed_spot_instance_is_told_and_replaced_with_the_home_kept(demo: Demo) -> None:
    demo.start("spot-bo")
    (instance,) = demo.instances("spot-bo")
    assert instance.get("InstanceLifecycle") == "spot"
    note = {"type": "file", "format": "text", "content": f"written {uuid.uuid4()}"}
    url = f"{demo.hub_url}user/spot-bo/api/contents/note.txt"
    assert demo.request("PUT", url, json=note).status_code in (200, 201)

    reclaim = {"interrupt_spot": instance["InstanceId"]}
    requests.put(control(demo), json=reclaim, timeout=10).raise_for_status()
    gone = demo.ec2().describe_instances(InstanceIds=[instance["InstanceId"]])
    (seen,) = [i for r in gone["Reservations"] for i in r["Instances"]]
    assert seen["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    deadline = time.monotonic() + 60
    while demo.server("spot-bo") is not None:  # the hub's poll sees it gone
        assert time.monotonic() < deadline, "the hub never noticed the reclaimed instance"
        time.sleep(0.5)

    messages = start_reading_progress(demo, "spot-bo")
    reclaimed = f"AWS reclaimed your spot instance {instance['InstanceId']}"
    assert any(m.startswith(reclaimed) for m in messages), messages
    live = [i for i in demo.instances("spot-bo") if i["State"]["Name"] != "terminated"]
    (replacement,) = live
    assert replacement["InstanceId"] != instance["InstanceId"]
    got = demo.request("GET", url).json()
    assert got["content"] == note["content"]
    demo.stop("spot-bo")
