"""instance_config.json and server_config.json: defaults, key names, and one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudjhub import config
from cloudjhub.config import (
    ConfigError,
    InstanceConfig,
    ServerConfig,
    load_instance_config,
    load_server_config,
    server_config_from,
    write_server_config,
)

ORIGINAL_INSTANCE_KEYS = {
    "MANAGER_INSTANCE_TYPE",
    "WORKER_INSTANCE_TYPE",
    "WORKER_EBS_SIZE",
    "USER_HOME_EBS_SIZE",
    "JUPYTER_NOTEBOOK_TIMEOUT",
    "CUSTOM_WORKER_AMI",
    "SERVER_USERNAME",
    "WORKER_USERNAME",
    "REGION",
    "SERVER_OWNER",
}


def server_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "CLUSTER_NAME": "alpha",
        "REGION": "us-east-1",
        "WORKER_AMI": "ami-0123456789abcdef0",
        "SUBNET_ID": "subnet-0123abcd",
        "WORKER_SECURITY_GROUPS": ["sg-0123abcd"],
        "KEY_NAME": "alpha-key",
    }
    data.update(overrides)
    return data


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def assert_one_message(exc: pytest.ExceptionInfo[ConfigError], path: Path, field: str) -> str:
    message = str(exc.value)
    assert str(path) in message
    assert field in message
    assert "\n" not in message, f"expected one message, got: {message!r}"
    return message


# ---- defaults and key names ------------------------------------------------


def test_missing_instance_config_means_all_defaults(tmp_path: Path) -> None:
    cfg = load_instance_config(tmp_path / "instance_config.json")
    assert cfg == InstanceConfig()
    assert cfg.WORKER_INSTANCE_TYPE == "t3.medium"
    assert cfg.MANAGER_INSTANCE_TYPE == "t3.small"
    assert cfg.WORKER_EBS_SIZE == config.MIN_EBS_SIZE == 8
    assert cfg.USER_HOME_EBS_SIZE == 0
    assert cfg.JUPYTER_NOTEBOOK_TIMEOUT == 3600
    assert cfg.CUSTOM_WORKER_AMI is None
    assert cfg.REGION == "us-east-1"


def test_server_config_defaults(tmp_path: Path) -> None:
    path = write_json(tmp_path / "server_config.json", server_data())
    cfg = load_server_config(path)
    assert cfg.CLUSTER_NAME == "alpha"
    assert cfg.WORKER_SECURITY_GROUPS == ["sg-0123abcd"]
    assert cfg.WORKER_INSTANCE_TYPE == "t3.medium"
    assert cfg.WORKER_EBS_SIZE == 8
    assert cfg.JUPYTER_NOTEBOOK_TIMEOUT == 3600
    assert cfg.SSH_PORT == 22
    assert cfg.SSH_HOST_KEY_SOURCE == "console"
    assert cfg.WORKER_USERNAME == "ubuntu"
    assert cfg.AWS_ENDPOINT_URL is None


def test_instance_config_uses_the_original_key_names(tmp_path: Path) -> None:
    # Plus keys of features the original lacked (hibernation, GPU images, the warm pool,
    # tags, subnets).
    assert set(InstanceConfig.model_fields) == ORIGINAL_INSTANCE_KEYS | {
        "HIBERNATE",
        "GPU_IMAGE",
        "WARM_POOL_SIZE",
        "WARM_POOL_SCHEDULE",
        "WARM_POOL_TIME_ZONE",
        "EXTRA_TAGS",
        "SUBNET_IDS",
    }
    original = {
        "MANAGER_INSTANCE_TYPE": "t3.large",
        "WORKER_INSTANCE_TYPE": "m5.xlarge",
        "WORKER_EBS_SIZE": 50,
        "USER_HOME_EBS_SIZE": 10,
        "JUPYTER_NOTEBOOK_TIMEOUT": 600,
        "CUSTOM_WORKER_AMI": "ami-0abc",
        "SERVER_USERNAME": "ec2-user",
        "WORKER_USERNAME": "ec2-user",
        "REGION": "eu-west-1",
        "SERVER_OWNER": "ops@example.com",
    }
    cfg = load_instance_config(write_json(tmp_path / "instance_config.json", original))
    assert cfg.model_dump() == {
        **original,
        "HIBERNATE": False,
        "GPU_IMAGE": False,
        "WARM_POOL_SIZE": 0,
        "WARM_POOL_SCHEDULE": [],
        "WARM_POOL_TIME_ZONE": "UTC",
        "EXTRA_TAGS": {},
        "SUBNET_IDS": [],
    }
    tagged = {**original, "EXTRA_TAGS": {"cloudjhub:user": "x"}}
    with pytest.raises(ConfigError, match=r"field EXTRA_TAGS\.cloudjhub:user"):
        load_instance_config(write_json(tmp_path / "instance_config.json", tagged))


def test_partial_instance_config_keeps_other_defaults(tmp_path: Path) -> None:
    path = write_json(tmp_path / "instance_config.json", {"WORKER_EBS_SIZE": 30})
    cfg = load_instance_config(path)
    assert cfg.WORKER_EBS_SIZE == 30
    assert cfg.WORKER_INSTANCE_TYPE == "t3.medium"


# ---- one message naming the file and the field -----------------------------


def test_malformed_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "instance_config.json"
    path.write_text('{\n  "WORKER_EBS_SIZE": 20,\n  "REGION": \n}\n')
    with pytest.raises(ConfigError) as exc:
        load_instance_config(path)
    message = assert_one_message(exc, path, "not valid JSON")
    assert "line" in message


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = write_json(tmp_path / "server_config.json", [server_data()])
    with pytest.raises(ConfigError) as exc:
        load_server_config(path)
    assert_one_message(exc, path, "JSON object")


@pytest.mark.parametrize(
    ("data", "field", "why"),
    [
        ({"WORKER_EBS_SIZ": 20}, "WORKER_EBS_SIZ", "unknown key"),
        ({"WORKER_EBS_SIZE": "8"}, "WORKER_EBS_SIZE", "integer"),
        ({"WORKER_EBS_SIZE": 7}, "WORKER_EBS_SIZE", "8"),
        ({"WORKER_EBS_SIZE": 8.5}, "WORKER_EBS_SIZE", "integer"),
        ({"JUPYTER_NOTEBOOK_TIMEOUT": -1}, "JUPYTER_NOTEBOOK_TIMEOUT", "1"),
        ({"JUPYTER_NOTEBOOK_TIMEOUT": 0}, "JUPYTER_NOTEBOOK_TIMEOUT", "1"),
        ({"USER_HOME_EBS_SIZE": -5}, "USER_HOME_EBS_SIZE", "0"),
        ({"WORKER_INSTANCE_TYPE": 3}, "WORKER_INSTANCE_TYPE", "string"),
    ],
)
def test_bad_instance_config_fails_naming_file_and_field(
    tmp_path: Path, data: dict[str, Any], field: str, why: str
) -> None:
    path = write_json(tmp_path / "instance_config.json", data)
    with pytest.raises(ConfigError) as exc:
        load_instance_config(path)
    message = assert_one_message(exc, path, f"field {field}")
    assert why in message


@pytest.mark.parametrize(
    ("overrides", "drop", "field", "why"),
    [
        ({}, "KEY_NAME", "KEY_NAME", "required"),
        ({}, "WORKER_AMI", "WORKER_AMI", "required"),
        ({"EXTRA": 1}, None, "EXTRA", "unknown key"),
        ({"WORKER_EBS_SIZE": "8"}, None, "WORKER_EBS_SIZE", "integer"),
        ({"WORKER_EBS_SIZE": 7}, None, "WORKER_EBS_SIZE", "8"),
        ({"JUPYTER_NOTEBOOK_TIMEOUT": -30}, None, "JUPYTER_NOTEBOOK_TIMEOUT", "1"),
        ({"WORKER_SECURITY_GROUPS": []}, None, "WORKER_SECURITY_GROUPS", "at least 1"),
        ({"WORKER_SECURITY_GROUPS": ["sg-1", 2]}, None, "WORKER_SECURITY_GROUPS.1", "string"),
        ({"WORKER_AMI": "image-1"}, None, "WORKER_AMI", "pattern"),
        ({"CLUSTER_NAME": "Alpha"}, None, "CLUSTER_NAME", "pattern"),
        ({"CLUSTER_NAME": "alpha\n"}, None, "CLUSTER_NAME", "pattern"),
        ({"SSH_PORT": 0}, None, "SSH_PORT", "1"),
        ({"SSH_HOST_KEY_SOURCE": "trust-anything"}, None, "SSH_HOST_KEY_SOURCE", "pattern"),
    ],
)
def test_bad_server_config_fails_naming_file_and_field(
    tmp_path: Path, overrides: dict[str, Any], drop: str | None, field: str, why: str
) -> None:
    data = server_data(**overrides)
    if drop:
        del data[drop]
    path = write_json(tmp_path / "server_config.json", data)
    with pytest.raises(ConfigError) as exc:
        load_server_config(path)
    message = assert_one_message(exc, path, f"field {field}")
    assert why in message.lower()


def test_several_errors_still_give_one_message(tmp_path: Path) -> None:
    data = server_data(WORKER_EBS_SIZE=1, JUPYTER_NOTEBOOK_TIMEOUT=-1, BOGUS=True)
    path = write_json(tmp_path / "server_config.json", data)
    with pytest.raises(ConfigError) as exc:
        load_server_config(path)
    assert_one_message(exc, path, "field ")


def test_missing_server_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "server_config.json"
    with pytest.raises(ConfigError) as exc:
        load_server_config(path)
    assert_one_message(exc, path, "cannot read")


def test_server_config_from_uses_the_same_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        server_config_from(server_data(WORKER_EBS_SIZE=7), source="launch arguments")
    assert str(exc.value).startswith("launch arguments: field WORKER_EBS_SIZE:")


# ---- writing and finding the file --------------------------------------------


def test_write_read_round_trip(tmp_path: Path) -> None:
    original = ServerConfig.model_validate(
        server_data(
            WORKER_SECURITY_GROUPS=["sg-0a", "sg-0b"],
            WORKER_EBS_SIZE=64,
            USER_HOME_EBS_SIZE=10,
            JUPYTER_NOTEBOOK_TIMEOUT=1,
            MANAGER_IP="10.0.0.10",
            SSH_PORT=2222,
            SSH_HOST_KEY_SOURCE="known_hosts",
            SSH_KNOWN_HOSTS="/etc/cloudjhub/known_hosts",
            AWS_ENDPOINT_URL="http://127.0.0.1:5000",
        )
    )
    path = tmp_path / "server_config.json"
    assert write_server_config(original, path) == path
    assert load_server_config(path) == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server_config.json"]
    on_disk = json.loads(path.read_text())
    assert on_disk["WORKER_SECURITY_GROUPS"] == ["sg-0a", "sg-0b"]
    assert on_disk["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "server_config.json"
    write_server_config(ServerConfig.model_validate(server_data(KEY_NAME="old")), path)
    write_server_config(ServerConfig.model_validate(server_data(KEY_NAME="new")), path)
    assert load_server_config(path).KEY_NAME == "new"


def test_env_var_picks_the_server_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = write_json(tmp_path / "elsewhere.json", server_data(CLUSTER_NAME="from-env"))
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "server_config.json", server_data(CLUSTER_NAME="from-cwd"))
    monkeypatch.setenv(config.SERVER_CONFIG_ENV, str(chosen))
    assert config.SERVER_CONFIG_ENV == "CLOUDJHUB_SERVER_CONFIG"
    assert config.server_config_path() == chosen
    assert load_server_config().CLUSTER_NAME == "from-env"
    # An explicit path still wins over the environment.
    assert load_server_config(tmp_path / "server_config.json").CLUSTER_NAME == "from-cwd"


def test_without_env_var_the_default_file_name_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(config.SERVER_CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "server_config.json", server_data(CLUSTER_NAME="from-cwd"))
    assert load_server_config().CLUSTER_NAME == "from-cwd"


def test_env_var_pointing_at_a_bad_file_names_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write_json(tmp_path / "bad.json", server_data(WORKER_EBS_SIZE="8"))
    monkeypatch.setenv(config.SERVER_CONFIG_ENV, str(bad))
    with pytest.raises(ConfigError) as exc:
        load_server_config()
    assert_one_message(exc, bad, "field WORKER_EBS_SIZE")
