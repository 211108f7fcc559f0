"""The warm pool's settings: traits, both config files, the hub's service, bad values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from traitlets import TraitError
from traitlets.config import Config

from cloudjhub.cli import main
from cloudjhub.config import ConfigError, InstanceConfig, load_server_config
from cloudjhub.hub import CONFIG_FILE
from cloudjhub.hub.apply import apply
from cloudjhub.hub.settings import SETTINGS_ENV, HubSettings, write_settings
from cloudjhub.local.demo import hub_settings as demo_settings
from cloudjhub.local.demo_secrets import make_passwords
from cloudjhub.spawner import InstanceSpawner


@pytest.fixture(autouse=True)
def proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)  # any executable will do


def settings(tmp_path: Path, **traits: Any) -> HubSettings:
    make_passwords(tmp_path)  # the demo's sign-in, as DemoStack.start writes it
    return demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, traits)


def services(s: HubSettings) -> dict[str, dict[str, Any]]:
    c = Config()
    apply(c, s, {"AWS_ACCESS_KEY_ID": "local"})
    return {svc["name"]: svc for svc in c.JupyterHub.services}


def test_the_hub_always_runs_the_pool_keeper(tmp_path: Path) -> None:
    """Even with no pool: a schedule or `cloudjhub prewarm` may open a window later."""
    none = services(settings(tmp_path))["cloudjhub-warm-pool"]
    assert none["command"][1:4] == ["warm-pool", "--size", "0"]

    found = services(settings(tmp_path, warm_pool_size=3, warm_pool_state="running"))

    keeper = found["cloudjhub-warm-pool"]
    keys_dir = str(tmp_path / "pool-host-keys")  # beside the usage log
    assert keeper["command"][1:] == [
        "warm-pool",
        "--size",
        "3",
        "--state",
        "running",
        "--keys-dir",
        keys_dir,
        "--buckets-file",
        str(tmp_path / "ec2-buckets.json"),  # the hub's: one copy of AWS's buckets
    ]
    assert keeper["environment"]["CLOUDJHUB_SERVER_CONFIG"] == str(tmp_path / "server_config.json")
    assert keeper["environment"]["AWS_ACCESS_KEY_ID"] == "local"


def test_warm_pool_size_comes_from_server_config(tmp_path: Path) -> None:
    config = {
        "CLUSTER_NAME": "alpha",
        "REGION": "us-east-1",
        "WORKER_AMI": "ami-0123abcd",
        "SUBNET_ID": "subnet-0123abcd",
        "WORKER_SECURITY_GROUPS": ["sg-1"],
        "KEY_NAME": "alpha-workers",
        "WARM_POOL_SIZE": 2,
    }
    path = tmp_path / "server_config.json"
    path.write_text(json.dumps(config))
    assert load_server_config(path).WARM_POOL_SIZE == 2
    keeper = services(settings(tmp_path))["cloudjhub-warm-pool"]
    assert keeper["command"][1:6] == ["warm-pool", "--size", "2", "--state", "stopped"]
    assert InstanceConfig.model_validate({"WARM_POOL_SIZE": 5}).WARM_POOL_SIZE == 5
    path.write_text(json.dumps({**config, "WARM_POOL_SIZE": -1}))
    with pytest.raises(ConfigError, match="field WARM_POOL_SIZE"):
        load_server_config(path)


@pytest.mark.parametrize(
    ("traits", "line"),
    [
        ({"warm_pool_size": -1}, "c.InstanceSpawner.warm_pool_size: -1 is not allowed"),
        ({"warm_pool_size": "3"}, "c.InstanceSpawner.warm_pool_size: '3' is not allowed"),
        ({"warm_pool_size": 1.5}, "c.InstanceSpawner.warm_pool_size: 1.5 is not allowed"),
        ({"warm_pool_state": "warm"}, "c.InstanceSpawner.warm_pool_state: 'warm' is not allowed"),
        ({"ec2_bucket_reserve": 0.9}, r"c.InstanceSpawner.ec2_bucket_reserve: 0.9; must be"),
        ({"ec2_bucket_reserve": "x"}, r"c.InstanceSpawner.ec2_bucket_reserve: 'x'; must be"),
        ({"ec2_bucket_reserve": False}, r"c.InstanceSpawner.ec2_bucket_reserve: False; must be"),
    ],
)
def test_bad_pool_settings_stop_the_hub_naming_setting_and_value(
    tmp_path: Path, traits: dict[str, Any], line: str
) -> None:
    with pytest.raises(TraitError, match=f"^{line}"):
        services(settings(tmp_path, **traits))


def test_jupyterhub_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    path = write_settings(settings(tmp_path, warm_pool_size=-1), tmp_path / "hub.json")
    env = {
        "PATH": "/usr/bin:/bin",
        SETTINGS_ENV: str(path),
        "CLOUDJHUB_PROXY_COMMAND": sys.executable,
    }
    hub = Path(sys.executable).with_name("jupyterhub")
    done = subprocess.run(
        [str(hub), "-f", str(CONFIG_FILE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [said] = [ln for ln in done.stderr.splitlines() if "warm_pool_size" in ln]
    assert "c.InstanceSpawner.warm_pool_size: -1 is not allowed" in said
    assert not (tmp_path / "jupyterhub.sqlite").exists()


def test_spawner_traits_refuse_bad_values() -> None:
    with pytest.raises(TraitError, match="warm_pool_size: -2"):
        InstanceSpawner(warm_pool_size=-2)
    with pytest.raises(TraitError, match="warm_pool_state"):
        InstanceSpawner(warm_pool_state="hot")
    assert InstanceSpawner(warm_pool_size=0).warm_pool_state == "stopped"


def test_demo_refuses_a_negative_pool(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--warm-pool-size", "-1", "--state-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "'--warm-pool-size': -1 is not in the range" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "d").exists()
