"""`cloudjhub setup-manager` without starting anything: the files it leaves for the hub,
and a unit that starts the hub on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from traitlets.config.loader import PyFileConfigLoader

from cloudjhub.hub.settings import SETTINGS_ENV, load_settings
from cloudjhub.launch.manager_setup import SECRET_FILES, STUB_CONFIG, main_json
from cloudjhub.launch.units import HUB_UNIT, parse_unit


def request(**overrides: Any) -> str:
    data: dict[str, Any] = {
        "server_config": {
            "CLUSTER_NAME": "alpha",
            "REGION": "us-east-1",
            "WORKER_AMI": "ami-0123456789abcdef0",
            "SUBNET_ID": "subnet-0123abcd",
            "WORKER_SECURITY_GROUPS": ["sg-0123abcd"],
            "KEY_NAME": "alpha-workers",
            "JUPYTER_NOTEBOOK_TIMEOUT": 1200,
        },
        "bind_ip": "10.0.1.5",
        "public_port": 443,
        "worker_command": ["/opt/cloudjhub/venv/bin/cloudjhub-worker"],
        "tls": {"cert": "CERT-PEM", "key": "PRIVATE-KEY-PEM"},
    }
    data.update(overrides)
    return json.dumps(data)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)  # any executable will do
    return tmp_path / "root"


def test_settings_are_private_and_hold_paths_not_secrets(root: Path) -> None:
    reply = json.loads(main_json(root, request(), start=False))
    etc = root / "etc" / "cloudjhub"
    assert reply["hub_settings"] == str(etc / "hub.json")
    hub_json = etc / "hub.json"
    assert hub_json.stat().st_mode & 0o777 == 0o600
    text = hub_json.read_text()
    for name in SECRET_FILES:
        assert (etc / name).read_text().strip() not in text, name
    assert "PRIVATE-KEY-PEM" not in text
    settings = load_settings(hub_json)
    assert settings.proxy.auth_token_file == str(etc / "proxy_token")
    assert settings.services.idle_timeout == 1200
    assert settings.tls is not None and settings.tls.key == str(etc / "ssl" / "hub.key")


def test_unit_runs_the_stub_with_the_settings_in_its_environment(root: Path) -> None:
    reply = json.loads(main_json(root, request(), start=False))
    etc = root / "etc" / "cloudjhub"
    stub = etc / "jupyterhub_config.py"
    assert reply["hub_config"] == str(stub)
    assert stub.read_text() == STUB_CONFIG
    unit = parse_unit((root / "etc" / "systemd" / "system" / HUB_UNIT).read_text())
    assert unit.exec_start == [sys.executable, "-m", "jupyterhub", "-f", str(stub)]
    assert unit.environment[SETTINGS_ENV] == str(etc / "hub.json")
    assert unit.environment["CLOUDJHUB_SERVER_CONFIG"] == str(etc / "server_config.json")


def test_what_the_unit_starts_is_the_manager_hub(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main_json(root, request(), start=False)
    etc = root / "etc" / "cloudjhub"
    unit = parse_unit((root / "etc" / "systemd" / "system" / HUB_UNIT).read_text())
    for name, value in unit.environment.items():
        monkeypatch.setenv(name, value)
    config_file = Path(unit.exec_start[-1])
    c = PyFileConfigLoader(config_file.name, str(config_file.parent)).load_config()
    assert c.JupyterHub.bind_url == "https://10.0.1.5:443"
    assert c.JupyterHub.ssl_key == str(etc / "ssl" / "hub.key")
    assert c.ConfigurableHTTPProxy.command == [sys.executable, "--redirect-port", "80"]
    assert c.ConfigurableHTTPProxy.auth_token == (etc / "proxy_token").read_text().strip()
    assert c.SharedPasswordAuthenticator.user_password == (
        (etc / "user_password").read_text().strip()
    )
    assert c.InstanceSpawner.server_config_file == str(etc / "server_config.json")
    culler = c.JupyterHub.services[0]
    assert culler["command"][-2:] == ["--timeout=1200", "--cull-every=300"]


def test_rerun_rewrites_settings_and_keeps_secrets(root: Path) -> None:
    main_json(root, request(), start=False)
    etc = root / "etc" / "cloudjhub"
    token = (etc / "proxy_token").read_text()
    main_json(root, request(public_port=8443, tls=None), start=False)
    assert (etc / "proxy_token").read_text() == token
    settings = load_settings(etc / "hub.json")
    assert settings.bind_url == "http://10.0.1.5:8443"
    assert settings.tls is None
