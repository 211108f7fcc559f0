"""`cloudjhub setup-manager` without starting anything: the files it leaves for the hub,
and a sandboxed unit that starts the hub on them as its own user."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from traitlets.config.loader import PyFileConfigLoader

from cloudjhub.cli import main
from cloudjhub.hub.apply import NATIVE_CLASS
from cloudjhub.hub.settings import SETTINGS_ENV, load_settings
from cloudjhub.launch import manager_setup
from cloudjhub.launch.manager_setup import SECRET_FILES, STUB_CONFIG, main_json
from cloudjhub.launch.units import HUB_UNIT, parse_unit
from tests.helpers import missing_here


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
    # Per-user sign-in by default: sign-up, approved by an admin; no shared password.
    assert c.JupyterHub.authenticator_class == NATIVE_CLASS
    assert c.SeededNativeAuthenticator.admin_password_file == str(etc / "admin_password")
    assert c.SeededNativeAuthenticator.open_signup is False
    assert "SharedPasswordAuthenticator" not in c
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


def _load_unit_config(root: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    unit = parse_unit((root / "etc" / "systemd" / "system" / HUB_UNIT).read_text())
    for name, value in unit.environment.items():
        monkeypatch.setenv(name, value)
    config_file = Path(unit.exec_start[-1])
    return PyFileConfigLoader(config_file.name, str(config_file.parent)).load_config()


def test_shared_password_only_when_asked(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reply = json.loads(main_json(root, request(), start=False, authenticator="shared-password"))
    etc = root / "etc" / "cloudjhub"
    assert reply["authenticator"] == "shared-password"
    c = _load_unit_config(root, monkeypatch)
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert c.SharedPasswordAuthenticator.user_password == (
        (etc / "user_password").read_text().strip()
    )


def test_reply_carries_the_admin_password_for_the_launcher(root: Path) -> None:
    reply = json.loads(main_json(root, request(), start=False))
    etc = root / "etc" / "cloudjhub"
    assert reply["admin_password"] == (etc / "admin_password").read_text().strip()
    assert len(reply["admin_password"]) >= 32


def test_unknown_authenticator_is_one_line_and_changes_nothing(root: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["setup-manager", "--root", str(root), "--no-start", "--authenticator", "saml"],
        input=request(),
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --authenticator 'saml': unknown; use one of native, shared-password, github, "
        "google, generic-oauth, lti13"
    ]
    assert not root.exists()


def test_setup_manager_command_takes_the_authenticator(root: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["setup-manager", "--root", str(root), "--no-start", "--authenticator", "shared-password"],
        input=request(),
    )
    assert result.exit_code == 0, result.output
    settings = load_settings(root / "etc" / "cloudjhub" / "hub.json")
    assert settings.authenticator.kind == "shared-password"


def test_real_manager_needs_the_hub_user(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> Any:
        raise KeyError(name)

    monkeypatch.setattr(manager_setup.pwd, "getpwnam", missing)
    with pytest.raises(ValueError, match="no system user 'cloudjhub'"):
        manager_setup.service_owner(Path("/"))
    assert manager_setup.service_owner(Path("/tmp/prefix")) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")
def test_hub_user_owns_its_state_and_the_secrets_it_reads(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = (65534, 65534)
    monkeypatch.setattr(manager_setup, "service_owner", lambda _root: nobody)
    main_json(root, request(), start=False)
    etc = root / "etc" / "cloudjhub"
    state = root / "var" / "lib" / "cloudjhub"
    assert (etc.stat().st_uid, etc.stat().st_gid, etc.stat().st_mode & 0o777) == (0, 65534, 0o750)
    for name in [*SECRET_FILES, "worker_key", "hub.json", "ssl/hub.key"]:
        info = (etc / name).stat()
        assert (info.st_uid, info.st_mode & 0o077) == (65534, 0), name
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (65534, 0o700)


def test_unit_runs_as_the_hub_user_in_a_sandbox(root: Path) -> None:
    main_json(root, request(), start=False)
    text = (root / "etc" / "systemd" / "system" / HUB_UNIT).read_text()
    state = root / "var" / "lib" / "cloudjhub"
    for line in (
        "User=cloudjhub",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        f"ReadWritePaths={state}",
    ):
        assert line in text.splitlines(), line
    assert parse_unit(text).user == "cloudjhub"


# systemd rates 0-10; under 2 leaves only what the hub must have: the network, the
# port capability for its proxy, W+X memory for node's JIT, /proc and the root tree.
MAX_EXPOSURE = 2.0


def test_systemd_rates_the_hub_unit_safe(root: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_here("systemd-analyze is not installed (scripts/bootstrap installs it)")
    main_json(root, request(), start=False)
    unit = root / "etc" / "systemd" / "system" / HUB_UNIT
    done = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) < MAX_EXPOSURE, done.stdout
