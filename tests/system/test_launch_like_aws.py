"""The launcher's main path (launch, a re-run, destroy) against `cloudjhub demo
--cloud-only --like-aws`: AWS-like state durations, console and throttling, with
a small time scale."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.test_launch import (
    ROOT,
    Cloud,
    _login_and_spawn,
    local_cloud,
    rerun_reuses_everything_then_destroy_removes_it,
)

pytestmark = pytest.mark.system

VPC_CIDR = "127.208.0.0/16"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    extra = ("--like-aws", "--time-scale", "0.1")
    with local_cloud(tmp_path_factory.mktemp("cloud"), VPC_CIDR, *extra) as running:
        yield running


def test_launch_rerun_and_destroy_like_aws(cloud: Cloud, tmp_path: Path) -> None:
    out = (cloud.state_dir / "cloud.out").read_text()
    assert "AWS behaviour layer (--like-aws" in out
    before = cloud.inventory()
    # The other choices: plain HTTP and a shared password, each asked for explicitly.
    options = ("--allow-http", "--authenticator", "shared-password")
    done = cloud.launch(
        *cloud.args("class2"),
        *options,
        "--yes",
        cwd=tmp_path,
        cmd=[sys.executable, str(ROOT / "launch_cluster" / "launch.py")],
    )
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip().splitlines()[-1]
    password_file = next((cloud.state_dir / "instances").glob("i-*/etc/cloudjhub/user_password"))
    seconds = _login_and_spawn(url, password_file.read_text().strip(), "hopper")
    print(f"\nlike-aws: first spawn on the launched cluster {seconds:.1f}s")

    assert "WARNING: the hub serves plain HTTP" in done.stderr
    # Stopped and started, the manager's console no longer shows its host keys
    # (keys-to-console runs once per instance): a re-run verifies it with the keys
    # the first run recorded.
    ec2 = cloud.ec2()
    (manager,) = [
        i["InstanceId"]
        for r in ec2.describe_instances(
            Filters=[
                {"Name": "tag:cloudjhub:cluster", "Values": ["class2"]},
                {"Name": "tag:cloudjhub:role", "Values": ["manager"]},
                {"Name": "instance-state-name", "Values": ["running"]},
            ]
        )["Reservations"]
        for i in r["Instances"]
    ]
    ec2.stop_instances(InstanceIds=[manager])
    again = cloud.launch(*cloud.args("class2"), *options, "--yes", "--timeout", "90", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"manager instance: {manager} (reused, stopp" in again.stderr
    assert "publish its SSH host key" not in again.stderr
    recorded = json.loads((tmp_path / "cloudjhub-class2-resources.json").read_text())
    assert list(recorded["host_keys"]) == [manager]

    rerun_reuses_everything_then_destroy_removes_it(cloud, "class2", tmp_path, before, options)
