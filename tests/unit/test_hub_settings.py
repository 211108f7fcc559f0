"""hub.json: what it may say, one clear error when it is wrong, and how it is written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.config import ConfigError
from cloudjhub.hub.settings import (
    DEFAULT_SETTINGS,
    SETTINGS_ENV,
    Dummy,
    HubSettings,
    SharedPassword,
    load_settings,
    settings_path,
    write_settings,
)


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "bind_url": "http://127.0.0.1:8000",
        "hub_ip": "127.0.0.1",
        "hub_port": 8081,
        "proxy": {
            "api_url": "http://127.0.0.1:8001",
            "command": ["/usr/bin/configurable-http-proxy"],
            "pid_file": "/var/lib/cloudjhub/proxy.pid",
        },
        "db_url": "sqlite:////var/lib/cloudjhub/jupyterhub.sqlite",
        "cookie_secret_file": "/etc/cloudjhub/cookie_secret",
        "pid_file": "/var/lib/cloudjhub/jupyterhub.pid",
        "authenticator": {"kind": "dummy"},
        "spawner": {
            "server_config_file": "/etc/cloudjhub/server_config.json",
            "worker_command": ["/opt/cloudjhub/venv/bin/cloudjhub-worker"],
            "usage_log": "/var/lib/cloudjhub/usage.jsonl",
        },
        "services": {"python": "/opt/cloudjhub/venv/bin/python", "idle_timeout": 3600},
    }
    data.update(overrides)
    return data


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(data))
    return path


def test_minimal_file_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, minimal()))
    assert isinstance(settings.authenticator, Dummy)
    assert settings.admin_users == ["admin"]
    assert settings.tls is None
    assert settings.proxy.auth_token_file is None
    assert settings.spawner.traits == {}
    assert settings.services.reaper_metrics_port is None
    assert settings.services.pass_environment == []
    assert settings.admin_token_env is None


def test_authenticator_kind_picks_its_fields(tmp_path: Path) -> None:
    auth = {
        "kind": "shared-password",
        "user_password_file": "/etc/cloudjhub/user_password",
        "admin_password_file": "/etc/cloudjhub/admin_password",
    }
    settings = load_settings(write(tmp_path, minimal(authenticator=auth)))
    assert isinstance(settings.authenticator, SharedPassword)
    assert settings.authenticator.admin_password_file == "/etc/cloudjhub/admin_password"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hub_port": 0}, "hub_port"),
        ({"hub_port": "8081"}, "hub_port"),
        ({"bind_url": "127.0.0.1:8000"}, "bind_url"),
        ({"cookie_secret_file": "cookie_secret"}, "cookie_secret_file"),
        ({"authenticator": {"kind": "pam"}}, "authenticator"),
        ({"authenticator": {"kind": "shared-password"}}, "authenticator.shared-password"),
        ({"proxy": {"api_url": "http://x", "command": [], "pid_file": "/p"}}, "proxy.command"),
        ({"services": {"python": "/p", "idle_timeout": 0}}, "services.idle_timeout"),
        ({"admin_token_env": "NOT A NAME"}, "admin_token_env"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_field_is_named_with_the_file(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    path = write(tmp_path, minimal(**change))
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}: field {re.escape(field)}[.:]"
    ):
        load_settings(path)


def test_spawner_traits_must_be_trait_names(tmp_path: Path) -> None:
    spawner = {**minimal()["spawner"], "traits": {"__class__": 1}}
    with pytest.raises(ConfigError, match=r"field spawner\.traits"):
        load_settings(write(tmp_path, minimal(spawner=spawner)))


def test_missing_or_malformed_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hub\.json: cannot read"):
        load_settings(tmp_path / "hub.json")
    (tmp_path / "hub.json").write_text("{")
    with pytest.raises(ConfigError, match=r"hub\.json: not valid JSON"):
        load_settings(tmp_path / "hub.json")


def test_path_comes_from_the_environment_or_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings_path({}) == DEFAULT_SETTINGS == Path("/etc/cloudjhub/hub.json")
    assert settings_path({SETTINGS_ENV: "/srv/hub.json"}) == Path("/srv/hub.json")
    path = write(tmp_path, minimal(hub_port=9000))
    monkeypatch.setenv(SETTINGS_ENV, str(path))
    assert load_settings().hub_port == 9000


def test_written_file_is_private_and_reads_back_equal(tmp_path: Path) -> None:
    settings = HubSettings.model_validate(minimal())
    path = tmp_path / "hub.json"
    path.write_text("old, world-readable")
    path.chmod(0o644)
    write_settings(settings, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_settings(path) == settings
    assert not list(tmp_path.glob("*.tmp"))
