"""Calls that fit AWS's buckets, through a real hub: concurrent first logins become one
RunInstances, concurrent stops one StopInstances, and a type AWS has no capacity for
(InsufficientInstanceCapacity injected by the like-AWS layer) falls back to the next.

The demo stack runs in this process (as in test_self_stop), behind the like-AWS layer,
so the test reads the layer's own count of the requests the hub made.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from cloudjhub.local import motoserver
from cloudjhub.local.awslike.settings import Behaviour
from cloudjhub.local.demo import DemoStack
from cloudjhub.local.ports import free_port

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

REGION = "eu-north-1"  # no other in-process moto user's
VPC_CIDR = "127.252.0.0/16"
USERS = ("amy", "ben")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DemoStack]:
    with pytest.MonkeyPatch.context() as mp:
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
            idle_timeout=600,
            api_token=secrets.token_hex(16),
            region=REGION,
            vpc_cidr=VPC_CIDR,
            say=lambda _message: None,
            like_aws=Behaviour(time_scale=0.05),
            # Wide enough that both spawns reach their launch within it on a busy machine.
            spawner_config={
                "ec2_coalesce_window": 1.5,
                "worker_instance_type_fallbacks": ["t3.large"],
            },
        )
        try:
            demo.start()
            yield demo
        finally:
            demo.stop()


def api(stack: DemoStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"token {stack.api_token}"}
    return requests.request(
        method, f"{stack.hub_url}hub/api{path}", headers=headers, timeout=30, **kwargs
    )


def wait_for(stack: DemoStack, user: str, ready: bool) -> None:
    deadline = time.monotonic() + 120
    while True:
        server = api(stack, "GET", f"/users/{user}").json()["servers"].get("")
        if ready:
            assert server is not None, f"spawn failed; see {stack.state_dir}/jupyterhub.log"
            if server.get("ready"):
                return
        elif server is None:
            return
        assert time.monotonic() < deadline, f"{user}: not {'ready' if ready else 'stopped'}"
        time.sleep(0.3)


def test_concurrent_logins_are_one_launch_falling_back_on_capacity_and_stops_one_call(
    stack: DemoStack,
) -> None:
    assert stack.awslike is not None and stack.network is not None
    layer = stack.awslike.layer
    layer.faults.set_rates({"InsufficientInstanceCapacity=t3.medium": 1.0})
    before = dict(layer.calls)
    for user in USERS:
        api(stack, "POST", f"/users/{user}")

    def spawn(user: str) -> None:
        reply = api(stack, "POST", f"/users/{user}/server")
        assert reply.status_code in (201, 202), reply.text
        wait_for(stack, user, ready=True)

    with concurrent.futures.ThreadPoolExecutor(len(USERS)) as pool:
        list(pool.map(spawn, USERS))

    def made(action: str) -> int:
        return layer.calls.get(action, 0) - before.get(action, 0)

    # One batch for t3.medium, refused; the same batch again as t3.large.
    assert made("RunInstances") == 2
    assert layer.faults.injected == {"InsufficientInstanceCapacity=t3.medium": 1}
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=stack.network.endpoint)
    reply = ec2.describe_instances(Filters=[{"Name": "tag:cloudjhub:user", "Values": list(USERS)}])
    found = [i for r in reply["Reservations"] for i in r["Instances"]]
    owners = {t["Value"] for i in found for t in i["Tags"] if t["Key"] == "cloudjhub:user"}
    assert len(found) == 2 and owners == set(USERS)
    assert {i["InstanceType"] for i in found} == {"t3.large"}

    with concurrent.futures.ThreadPoolExecutor(len(USERS)) as pool:
        list(pool.map(lambda u: api(stack, "DELETE", f"/users/{u}/server"), USERS))
    for user in USERS:
        wait_for(stack, user, ready=False)
    assert made("StopInstances") == 1
    assert layer.throttle.throttled == {}
