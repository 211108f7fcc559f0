"""`cloudjhub demo --aws-endpoint URL --like-aws`: the AWS behaviour layer in front of an
EC2 endpoint the demo does not own (a plain `python -m moto.server`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.system.conftest import Demo, plain_moto_server, running_demo

pytestmark = pytest.mark.system

VPC_CIDR = "127.206.0.0/16"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with plain_moto_server(tmp_path_factory.mktemp("moto")) as (_, url):
        yield url


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, endpoint: str) -> Iterator[Demo]:
    state_dir = tmp_path_factory.mktemp("like-aws-external")
    extra = ("--aws-endpoint", endpoint, "--like-aws", "--time-scale", "0.1")
    with running_demo(state_dir, 3600, VPC_CIDR, *extra) as running:
        yield running


def test_spawn_stop_and_restart_through_the_layer(demo: Demo, endpoint: str) -> None:
    facts = demo.facts()
    assert facts["aws_upstream"] == endpoint
    assert demo.endpoint != endpoint  # clients go through the layer
    out = (demo.state_dir / "demo.out").read_text()
    said = (
        "private IP reuse after termination, EFS's creating states and IAM's "
        "propagation delay are not modelled with --aws-endpoint"
    )
    assert said in out

    demo.start("alice")
    (instance,) = demo.instances("alice")
    demo.stop("alice")
    assert demo.state_of("alice") == "stopping"
    demo.start("alice")
    (again,) = demo.instances("alice")
    assert again["InstanceId"] == instance["InstanceId"]
    # Host keys came from the console the layer serves, not from a known_hosts file.
    config = json.loads((demo.state_dir / "server_config.json").read_text())
    assert config["SSH_HOST_KEY_SOURCE"] == "console"
    demo.stop("alice")
