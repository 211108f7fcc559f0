"""The shipped jupyterhub_config.py, loaded as JupyterHub loads it (no hub started),
and the manager's stub that runs it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from jupyterhub.app import JupyterHub
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from cloudjhub.config import ConfigError
from cloudjhub.hub import CONFIG_FILE
from cloudjhub.hub.settings import SETTINGS_ENV, write_settings
from cloudjhub.launch.manager_setup import STUB_CONFIG
from cloudjhub.local.demo import TOKEN_ENV
from cloudjhub.local.demo import hub_settings as demo_settings


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)  # any executable will do
    settings = demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, {"self_stop_grace": 5})
    (tmp_path / "admin_password").write_text("a" * 32 + "\n")
    (tmp_path / "user_password").write_text("u" * 12 + "\n")
    path = write_settings(settings, tmp_path / "hub.json")
    monkeypatch.setenv(SETTINGS_ENV, str(path))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return path


def load(path: Path) -> Config:
    return PyFileConfigLoader(path.name, str(path.parent)).load_config()


def test_module_is_shipped_inside_the_package() -> None:
    import cloudjhub.hub

    assert CONFIG_FILE.parent == Path(cloudjhub.hub.__file__).parent
    assert CONFIG_FILE.name == "jupyterhub_config.py"
    assert CONFIG_FILE.is_file()


def test_module_applies_the_settings_file_from_the_environment(
    settings_file: Path, tmp_path: Path
) -> None:
    c = load(CONFIG_FILE)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8123"
    assert c.JupyterHub.hub_port == 45001
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert c.JupyterHub.spawner_class == "cloudjhub"
    assert c.JupyterHub.cleanup_servers is False
    assert c.InstanceSpawner.server_config_file == str(tmp_path / "server_config.json")
    assert c.InstanceSpawner.self_stop_grace == 5
    assert [s["name"] for s in c.JupyterHub.services] == [
        "idle-culler",
        "cloudjhub-reaper",
        "cloudjhub-warm-pool",
    ]


def test_jupyterhub_takes_the_module_as_its_config_file(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t0ken")
    app = JupyterHub()
    app.load_config_file(str(CONFIG_FILE))
    assert app.bind_url == "http://127.0.0.1:8123"
    assert app.hub_port == 45001
    assert app.cleanup_servers is False
    assert app.last_activity_interval == 0
    assert {s["name"] for s in app.services} == {
        "idle-culler",
        "cloudjhub-reaper",
        "cloudjhub-warm-pool",
        "demo-admin",
    }
    assert {r["name"] for r in app.load_roles} == {"idle-culler", "cloudjhub-reaper", "admin"}


def test_a_bad_settings_file_stops_the_hub_with_its_name_and_field(
    settings_file: Path,
) -> None:
    data = json.loads(settings_file.read_text())
    data["hub_port"] = "not a port"
    settings_file.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(settings_file))}: field hub_port:"):
        load(CONFIG_FILE)


def test_manager_stub_runs_the_module_and_leaves_room_for_admin_lines(
    settings_file: Path, tmp_path: Path
) -> None:
    stub = tmp_path / "etc" / "jupyterhub_config.py"
    stub.parent.mkdir()
    stub.write_text(STUB_CONFIG + "c.JupyterHub.authenticator_class = 'github'\n")
    c = load(stub)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8123"
    assert c.InstanceSpawner.self_stop_grace == 5
    assert c.JupyterHub.authenticator_class == "github"


def test_manager_stub_fails_loudly_if_the_module_is_missing(
    settings_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudjhub.hub

    monkeypatch.setattr(cloudjhub.hub, "CONFIG_FILE", tmp_path / "gone.py")
    stub = tmp_path / "jupyterhub_config.py"
    stub.write_text(STUB_CONFIG)
    with pytest.raises(FileNotFoundError):
        load(stub)
