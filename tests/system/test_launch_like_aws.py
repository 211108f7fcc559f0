"""The launcher's main path (launch, a re-run, destroy) against `cloudjhub demo
--cloud-only --like-aws`: AWS-like state durations, console and throttling, with
a small time scale."""

from __future__ import annotations

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
    rerun_reuses_everything_then_destroy_removes_it(cloud, "class2", tmp_path, before, options)
