"""A hub killed with SIGKILL, restarted by `cloudjhub demo`: the servers users still
have are adopted (same instance, still reachable through the proxy), and a worker
that no hub server wants is stopped by the reaper within one round plus its grace."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.config import load_server_config
from cloudjhub.reaper import default_timing
from tests.helpers import alive

if TYPE_CHECKING:
    from tests.system.conftest import Demo

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

IDLE_TIMEOUT = 30
VPC_CIDR = "127.187.0.0/16"
INTERVAL, GRACE = default_timing(IDLE_TIMEOUT)
USERS = ("alice", "bob")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def launch_orphan(demo: Demo, user: str) -> str:
    """A worker tagged as the spawner tags them, that no hub server knows about."""
    config = load_server_config(demo.state_dir / "server_config.json")
    spec = WorkerSpec(
        image_id=config.WORKER_AMI,
        instance_type=config.WORKER_INSTANCE_TYPE,
        subnet_id=config.SUBNET_ID,
        security_group_ids=tuple(config.WORKER_SECURITY_GROUPS),
        key_name=config.KEY_NAME,
        ebs_size=config.WORKER_EBS_SIZE,
    )
    return LocalCloudEc2(config.CLUSTER_NAME, demo.ec2()).launch_worker(user, spec, "orphan-1").id


def touch(demo: Demo, user: str) -> requests.Response:
    """What a working user does: save a file on their server, through the proxy.

    A write, not a read: reads are not activity, and on a loaded machine the test
    outlasts the idle timeout, so a server only read from would be culled (424)."""
    body = {"type": "file", "format": "text", "content": f"{time.time()}\n"}
    return demo.request("PUT", f"{demo.hub_url}user/{user}/api/contents/touched.txt", json=body)


def test_orphan_is_reaped_and_wanted_servers_are_adopted_after_a_hub_crash(
    demo_factory: Callable[[int, str], Demo],
) -> None:
    demo = demo_factory(IDLE_TIMEOUT, VPC_CIDR)
    for user in USERS:
        demo.start(user)
    instance_of = {u: demo.instances(u)[0]["InstanceId"] for u in USERS}

    old_hub = demo.facts()["hub_pid"]
    managed = children(old_hub)  # proxy, culler, reaper
    assert len(managed) >= 3, managed
    os.kill(old_hub, signal.SIGKILL)
    orphan = launch_orphan(demo, "ghost")

    deadline = time.monotonic() + 90
    while demo.facts().get("hub_pid") == old_hub:
        assert time.monotonic() < deadline, "the demo did not restart its hub"
        time.sleep(0.2)
    restarted = time.monotonic()
    out = (demo.state_dir / "demo.out").read_text()
    assert "JupyterHub exited unexpectedly with status -9; restarting it" in out
    assert all(not alive(pid) for pid in managed), "the dead hub's proxy or services live on"

    # Adopted: the same servers, on the same instances, reachable through the new proxy.
    for user in USERS:
        server = demo.server(user)
        assert server is not None and server["ready"], f"{user}'s server was forgotten"
        assert server["state"]["instance_id"] == instance_of[user]
        deadline = time.monotonic() + 30
        while (reply := touch(demo, user)).status_code not in (200, 201):
            assert time.monotonic() < deadline, f"{user}: {reply.status_code} {reply.text[:200]}"
            time.sleep(0.5)

    # Reaped: the orphan stops within a reaper round plus the grace period (and the
    # hub's and the reaper's own start-up); the users keep working meanwhile.
    limit = INTERVAL + GRACE + 15

    def orphan_state() -> str:
        reply = demo.ec2().describe_instances(InstanceIds=[orphan])
        return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])

    while orphan_state() not in ("stopping", "stopped"):
        assert time.monotonic() - restarted < limit, "the orphan was not stopped"
        for user in USERS:
            assert touch(demo, user).status_code in (200, 201)
        time.sleep(1)
    took = time.monotonic() - restarted

    for user in USERS:
        assert demo.state_of(user) == "running"
        assert demo.instances(user)[0]["InstanceId"] == instance_of[user]
        assert demo.server(user) is not None
    log = Path(demo.facts()["usage_log"]).read_text().splitlines()
    reaped = [e for e in map(json.loads, log) if e["instance_id"] == orphan]
    assert [(e["event"], e["user"], e["reason"]) for e in reaped] == [("stop", "ghost", "reaper")]
    scraped = requests.get(demo.facts()["reaper_metrics_url"], timeout=10).text
    stops = [
        s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "cloudjhub_reaper_stops_total"
    ]
    assert stops == [1.0]
    print(
        f"\norphan stopped {took:.1f}s after the hub restart "
        f"(reaper interval {INTERVAL:g}s, grace {GRACE:g}s)"
    )
