"""A worker whose hub is gone stops its own instance.

The demo stack runs in this process (moto, the fleet emulator, a real hub with its
proxy and culler as a subprocess), so the test can stop just the hub, by pid, and
leave the user's server running on its instance (cleanup_servers is False). The
worker's watchdog must then shut the machine down, which EC2 turns into a stop,
within idle timeout + grace + one check period of the server's last activity.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from cloudjhub.local import motoserver
from cloudjhub.local.demo import DemoStack
from cloudjhub.local.ports import free_port
from cloudjhub.worker.watchdog import check_interval
from tests.helpers import alive

pytestmark = [pytest.mark.system, pytest.mark.timeout(150)]

IDLE_TIMEOUT = 20
GRACE = 5
LIMIT = IDLE_TIMEOUT + GRACE
# Not the region of any other in-process moto user (moto's backends are per process).
REGION = "eu-west-1"
# A loopback /16 of its own, so it never meets another local cloud on this machine.
VPC_CIDR = "127.189.0.0/16"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DemoStack]:
    token = secrets.token_hex(16)
    with pytest.MonkeyPatch.context() as mp:
        # DemoStack writes AWS_* and moto's flags into os.environ; undo that afterwards.
        for key in (
            *motoserver.LOCAL_CREDENTIALS,
            *motoserver.VALIDATION_FLAGS,
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_EC2",
        ):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
        demo = DemoStack(
            state_dir=tmp_path / "demo",
            port=free_port(),
            idle_timeout=IDLE_TIMEOUT,
            api_token=token,
            region=REGION,
            vpc_cidr=VPC_CIDR,
            say=lambda _message: None,
            spawner_config={"self_stop_grace": GRACE},
        )
        try:
            demo.start()
            yield demo
        finally:
            demo.stop()


def api(stack: DemoStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"token {stack.api_token}"}
    url = path if path.startswith("http") else f"{stack.hub_url}hub/api{path}"
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


def start_server(stack: DemoStack, user: str) -> None:
    api(stack, "POST", f"/users/{user}")
    reply = api(stack, "POST", f"/users/{user}/server")
    assert reply.status_code in (201, 202), reply.text
    deadline = time.monotonic() + 90
    while True:
        server = api(stack, "GET", f"/users/{user}").json()["servers"].get("")
        assert server is not None, f"spawn failed; see {stack.state_dir}/jupyterhub.log"
        if server.get("ready"):
            return
        assert time.monotonic() < deadline, "the server was not ready within 90 s"
        time.sleep(0.2)


def test_worker_stops_its_instance_when_the_hub_is_gone(
    stack: DemoStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloudjhub.local.emulator")
    assert stack.network is not None and stack.emulator is not None and stack.hub is not None
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=stack.network.endpoint)

    def instance() -> dict[str, Any]:
        reply = ec2.describe_instances(Filters=[{"Name": "tag:cloudjhub:user", "Values": ["ann"]}])
        (found,) = [i for r in reply["Reservations"] for i in r["Instances"]]
        return found

    start_server(stack, "ann")
    inst = instance()
    root = stack.emulator.root_of(inst["InstanceId"])
    state = json.loads((root / "run" / "cloudjhub" / "ann.json").read_text())
    assert state["watch"]["limit"] == LIMIT
    server_pid, watchdog_pid = state["pid"], state["watchdog"]["pid"]
    assert alive(server_pid) and alive(watchdog_pid)

    # The server's own last activity, read directly (a status read is not activity).
    status = api(stack, "GET", f"http://{inst['PrivateIpAddress']}:8888/user/ann/api/status")
    assert status.status_code == 200, status.text
    last_activity = datetime.fromisoformat(status.json()["last_activity"]).timestamp()

    # Stop only the hub (and what it manages: proxy, culler); the server keeps running.
    stack.hub.send_signal(signal.SIGTERM)
    assert stack.hub.wait(timeout=30) is not None
    hub_gone = time.time()
    assert alive(server_pid), "stopping the hub stopped the user's server"
    assert instance()["State"]["Name"] == "running"

    deadline = last_activity + LIMIT + check_interval(LIMIT) + 20
    while instance()["State"]["Name"] != "stopped":
        assert time.time() < deadline, "the worker did not stop its own instance"
        time.sleep(0.25)
    stopped_after = time.time() - last_activity

    log = (root / "var" / "log" / "cloudjhub" / "ann.watch.log").read_text()
    assert "shutting the instance down" in log, log
    assert f"{inst['InstanceId']} shut itself down; EC2 stops it" in caplog.text
    # Never before the limit: the decision counts from the last activity.
    assert stopped_after >= LIMIT - 1, log
    deadline = time.monotonic() + 15
    while alive(server_pid) or alive(watchdog_pid):
        assert time.monotonic() < deadline, "the stopped machine's processes still run"
        time.sleep(0.2)
    print(
        f"\nself-stop: hub stopped {hub_gone - last_activity:.1f}s after the last activity; "
        f"instance stopped {stopped_after:.1f}s after it "
        f"(limit {LIMIT}s = timeout {IDLE_TIMEOUT} + grace {GRACE}, "
        f"check every {check_interval(LIMIT):g}s)"
    )
