"""apply(): what a manager's and the demo's hub are configured with, from their settings.

The settings come from the builders `setup-manager` and `cloudjhub demo` use,
so these are the configs those hubs start with, checked without starting one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from jupyterhub import orm
from sqlalchemy import text
from traitlets.config import Config

from cloudjhub.hub.apply import NATIVE_CLASS, apply
from cloudjhub.hub.database import db_kwargs
from cloudjhub.hub.services import CULLER_SCOPES, REAPER_SCOPES, culler_every
from cloudjhub.hub.settings import HubSettings
from cloudjhub.launch.manager_setup import SECRET_FILES, SetupRequest
from cloudjhub.launch.manager_setup import hub_settings as manager_settings
from cloudjhub.local.demo import HUB_MARKER, TOKEN_ENV
from cloudjhub.local.demo import hub_settings as demo_settings

PROXY = "/usr/local/bin/configurable-http-proxy"
PYTHON = "/opt/cloudjhub/venv/bin/python"


@pytest.fixture(autouse=True)
def proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """find_proxy() finds this one, wherever the test runs."""
    fake = tmp_path / "bin" / "configurable-http-proxy"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", str(fake))


def manager(
    tmp_path: Path, port: int = 80, tls: bool = False, authenticator: Any = "native"
) -> HubSettings:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    for name in SECRET_FILES:
        (etc / name).write_text(f"{name}-value\n")
    request = SetupRequest.model_validate(
        {
            "server_config": {},
            "bind_ip": "10.0.1.5",
            "public_port": port,
            "worker_command": ["/opt/cloudjhub/venv/bin/cloudjhub-worker"],
        }
    )
    pair = (etc / "ssl" / "hub.crt", etc / "ssl" / "hub.key") if tls else None
    return manager_settings(etc, state, request, 3600, pair, PYTHON, authenticator)


def applied(settings: HubSettings, environ: dict[str, str] | None = None) -> Config:
    c = Config()
    apply(c, settings, environ or {})
    return c


def service(c: Config, name: str) -> dict[str, Any]:
    (found,) = [s for s in c.JupyterHub.services if s["name"] == name]
    return dict(found)


def role(c: Config, name: str) -> dict[str, Any]:
    (found,) = [r for r in c.JupyterHub.load_roles if r["name"] == name]
    return dict(found)


def test_manager_hub_listens_on_its_private_ip_and_reads_secrets_from_files(
    tmp_path: Path,
) -> None:
    c = applied(manager(tmp_path))
    hub = c.JupyterHub
    assert hub.bind_url == "http://10.0.1.5:80"
    assert (hub.hub_ip, hub.hub_port) == ("10.0.1.5", 8081)
    assert "ssl_cert" not in hub and "ssl_key" not in hub
    assert c.ConfigurableHTTPProxy.api_url == "http://10.0.1.5:8001"
    assert c.ConfigurableHTTPProxy.command == [os.environ["CLOUDJHUB_PROXY_COMMAND"]]
    assert c.ConfigurableHTTPProxy.auth_token == "proxy_token-value"
    assert c.ConfigurableHTTPProxy.pid_file == str(tmp_path / "state" / "proxy.pid")
    assert hub.db_url == "sqlite:///" + str(tmp_path / "state" / "jupyterhub.sqlite")
    assert hub.cookie_secret_file == str(tmp_path / "etc" / "cookie_secret")
    assert hub.pid_file == str(tmp_path / "state" / "jupyterhub.pid")
    assert hub.authenticator_class == NATIVE_CLASS
    native = c.SeededNativeAuthenticator
    assert native.admin_password_file == str(tmp_path / "etc" / "admin_password")
    assert (native.enable_signup, native.open_signup) == (True, False)
    assert native.minimum_password_length >= 8 and native.check_common_password is True
    assert "SharedPasswordAuthenticator" not in c
    assert c.Authenticator.admin_users == {"admin"}
    assert c.Authenticator.allow_all is True


def test_manager_shared_password_only_when_asked(tmp_path: Path) -> None:
    c = applied(manager(tmp_path, authenticator="shared-password"))
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert c.SharedPasswordAuthenticator.user_password == "user_password-value"
    assert c.SharedPasswordAuthenticator.admin_password == "admin_password-value"
    assert "SeededNativeAuthenticator" not in c


def test_no_secret_is_in_the_manager_settings(tmp_path: Path) -> None:
    text = manager(tmp_path).model_dump_json()
    for name in SECRET_FILES:
        assert f"{name}-value" not in text


@pytest.mark.parametrize(
    ("port", "redirect"), [(443, ["--redirect-port", "80"]), (8443, [])], ids=["443", "8443"]
)
def test_manager_tls_serves_https_and_redirects_80_only_on_443(
    tmp_path: Path, port: int, redirect: list[str]
) -> None:
    c = applied(manager(tmp_path, port=port, tls=True))
    assert c.JupyterHub.bind_url == f"https://10.0.1.5:{port}"
    assert c.JupyterHub.ssl_cert == str(tmp_path / "etc" / "ssl" / "hub.crt")
    assert c.JupyterHub.ssl_key == str(tmp_path / "etc" / "ssl" / "hub.key")
    assert c.ConfigurableHTTPProxy.command == [os.environ["CLOUDJHUB_PROXY_COMMAND"], *redirect]


def test_every_hub_keeps_servers_across_restarts_and_ignores_proxy_traffic(
    tmp_path: Path,
) -> None:
    c = applied(manager(tmp_path))
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.last_activity_interval == 0
    assert c.JupyterHub.spawner_class == "cloudjhub"
    assert c.InstanceSpawner.server_config_file == str(tmp_path / "etc" / "server_config.json")
    assert c.InstanceSpawner.worker_command == ["/opt/cloudjhub/venv/bin/cloudjhub-worker"]
    assert c.InstanceSpawner.usage_log == str(tmp_path / "state" / "usage.jsonl")


def test_manager_and_demo_keep_pinned_host_keys_beside_their_state(tmp_path: Path) -> None:
    """Not in the hub's database, which may be lost; not in /etc, which is config."""
    c = applied(manager(tmp_path))
    assert c.InstanceSpawner.host_key_store == str(tmp_path / "state" / "host_keys.json")
    c = applied(demo(tmp_path))
    assert c.InstanceSpawner.host_key_store == str(tmp_path / "host_keys.json")


def test_culler_and_reaper_run_with_only_their_scopes(tmp_path: Path) -> None:
    environ = {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://x", "HOME": "/root"}
    c = applied(manager(tmp_path), environ)
    assert [s["name"] for s in c.JupyterHub.services] == [
        "idle-culler",
        "cloudjhub-reaper",
        "cloudjhub-users",
        "cloudjhub-warm-pool",  # always: `cloudjhub prewarm` needs no hub restart
    ]
    culler = service(c, "idle-culler")
    assert culler["command"] == [
        PYTHON,
        "-m",
        "jupyterhub_idle_culler",
        "--timeout=3600",
        f"--cull-every={culler_every(3600)}",
    ]
    assert culler["environment"] == {}
    reaper = service(c, "cloudjhub-reaper")
    assert reaper["command"] == [
        "/opt/cloudjhub/venv/bin/cloudjhub",
        "reap",
        "--usage-log",
        str(tmp_path / "state" / "usage.jsonl"),
    ]
    # The AWS chain's variables and the cluster's config, none of the hub's others.
    assert reaper["environment"] == {
        "CLOUDJHUB_SERVER_CONFIG": str(tmp_path / "etc" / "server_config.json"),
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://x",
    }
    assert role(c, "idle-culler") == {
        "name": "idle-culler",
        "services": ["idle-culler"],
        "scopes": list(CULLER_SCOPES),
    }
    assert role(c, "cloudjhub-reaper") == {
        "name": "cloudjhub-reaper",
        "services": ["cloudjhub-reaper"],
        "scopes": list(REAPER_SCOPES),
    }
    assert CULLER_SCOPES == ("list:users", "read:users:activity", "read:servers", "delete:servers")
    assert REAPER_SCOPES == ("list:users", "read:servers")


def test_a_manager_never_registers_the_demo_token(tmp_path: Path) -> None:
    c = applied(manager(tmp_path), {TOKEN_ENV: "t0ken"})
    assert "demo-admin" not in [s["name"] for s in c.JupyterHub.services]
    # The admin role holds only the admins group (`cloudjhub users add --admin`).
    assert [r for r in c.JupyterHub.load_roles if r["name"] == "admin"] == [
        {"name": "admin", "groups": ["admins"]}
    ]


@pytest.mark.parametrize(("timeout", "every"), [(1, 2), (30, 7), (3600, 600), (7200, 600)])
def test_culler_checks_a_quarter_of_the_timeout_within_bounds(timeout: int, every: int) -> None:
    assert culler_every(timeout) == every


def demo(tmp_path: Path, **traits: Any) -> HubSettings:
    """The demo's settings, with the password files DemoStack.start writes."""
    (tmp_path / "admin_password").write_text("a" * 43 + "\n")
    (tmp_path / "user_password").write_text("u" * 16 + "\n")
    return demo_settings(tmp_path, 8000, 45001, 45002, 30, 45003, traits)


def test_demo_hub_is_on_loopback_with_its_own_passwords(tmp_path: Path) -> None:
    c = applied(demo(tmp_path))
    hub = c.JupyterHub
    assert hub.bind_url == "http://127.0.0.1:8000"
    assert (hub.hub_ip, hub.hub_port) == ("127.0.0.1", 45001)
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:45002"
    assert c.ConfigurableHTTPProxy.pid_file == str(tmp_path / "proxy.pid")
    # The hub makes up the proxy's token: the demo keeps none in a file.
    assert "auth_token" not in c.ConfigurableHTTPProxy
    assert hub.db_url == "sqlite:///" + str(tmp_path / "jupyterhub.sqlite")
    assert hub.cookie_secret_file == str(tmp_path / "jupyterhub_cookie_secret")
    assert hub.pid_file == str(tmp_path / "jupyterhub.pid")
    # Not any password: admin's own, and one for every other name.
    assert hub.authenticator_class == "shared-password"
    assert c.SharedPasswordAuthenticator.admin_password == "a" * 43
    assert c.SharedPasswordAuthenticator.user_password == "u" * 16
    assert c.Authenticator.admin_users == {"admin"}
    assert c.Authenticator.allow_all is True
    assert hub.cleanup_servers is False
    assert hub.last_activity_interval == 0
    assert c.InstanceSpawner.server_config_file == str(tmp_path / "server_config.json")
    assert c.InstanceSpawner.worker_command == [
        str(Path(sys.executable).with_name("cloudjhub-worker"))
    ]
    assert c.InstanceSpawner.usage_log == str(tmp_path / "usage.jsonl")


def test_demo_spawner_is_quick_and_takes_extra_traits_last(tmp_path: Path) -> None:
    c = applied(demo(tmp_path, self_stop_grace=5, hang_grace=12))
    spawner = c.InstanceSpawner
    assert spawner.state_poll_interval == 0.5
    assert spawner.ssh_retry_interval == 0.5
    assert spawner.fleet_refresh_interval == 5
    assert spawner.self_stop_grace == 5
    assert spawner.hang_grace == 12  # the caller's value beats the demo's 30
    assert applied(demo(tmp_path)).InstanceSpawner.hang_grace == 30


def test_demo_hub_config_is_merged_last(tmp_path: Path) -> None:
    """`cloudjhub demo --hub-config`: a class's spawn limit, another single-user command."""
    (tmp_path / "admin_password").write_text("a" * 43 + "\n")
    (tmp_path / "user_password").write_text("u" * 16 + "\n")
    extra = {
        "JupyterHub": {"concurrent_spawn_limit": 300},
        "InstanceSpawner": {"cmd": ["python", "-m", "jupyterhub.tests.mocksu"], "hang_grace": 9},
    }
    settings = demo_settings(tmp_path, 8000, 45001, 45002, 30, 45003, jupyterhub_config=extra)
    c = applied(settings)
    assert c.JupyterHub.concurrent_spawn_limit == 300
    assert c.InstanceSpawner.cmd == ["python", "-m", "jupyterhub.tests.mocksu"]
    assert c.InstanceSpawner.hang_grace == 9  # beats the demo's own 30
    assert c.InstanceSpawner.state_poll_interval == 0.5  # the rest is kept
    assert c.JupyterHub.hub_port == 45001
    # The warm pool's service is started from the spawner's traits: it sees them.
    pooled = {"InstanceSpawner": {"warm_pool_size": 3, "warm_pool_state": "running"}}
    settings = demo_settings(tmp_path, 8000, 45001, 45002, 30, 45003, jupyterhub_config=pooled)
    (keeper,) = [s for s in applied(settings).JupyterHub.services if "warm" in s["name"]]
    assert "running" in keeper["command"]


def test_demo_services_carry_its_marker_and_serve_reaper_metrics(tmp_path: Path) -> None:
    environ = {HUB_MARKER: str(tmp_path), "AWS_ACCESS_KEY_ID": "local-demo", "OTHER": "x"}
    c = applied(demo(tmp_path), environ)
    culler = service(c, "idle-culler")
    assert culler["environment"] == {HUB_MARKER: str(tmp_path)}
    assert culler["command"][-2:] == ["--timeout=30", "--cull-every=7"]
    reaper = service(c, "cloudjhub-reaper")
    assert reaper["command"] == [
        str(Path(sys.executable).with_name("cloudjhub")),
        "reap",
        "--usage-log",
        str(tmp_path / "usage.jsonl"),
        "--metrics-port",
        "45003",
    ]
    assert reaper["environment"] == {
        "CLOUDJHUB_SERVER_CONFIG": str(tmp_path / "server_config.json"),
        "AWS_ACCESS_KEY_ID": "local-demo",
        HUB_MARKER: str(tmp_path),
    }
    # Without the marker in the hub's environment, the services get none.
    assert service(applied(demo(tmp_path)), "idle-culler")["environment"] == {}


def test_demo_admin_token_comes_from_the_hub_environment_only(tmp_path: Path) -> None:
    settings = demo(tmp_path)
    assert "t0ken" not in settings.model_dump_json()
    without = applied(settings, {TOKEN_ENV: ""})
    assert "demo-admin" not in [s["name"] for s in without.JupyterHub.services]
    c = applied(settings, {TOKEN_ENV: "t0ken"})
    assert service(c, "demo-admin") == {"name": "demo-admin", "api_token": "t0ken"}
    assert role(c, "admin") == {"name": "admin", "services": ["demo-admin"]}


def test_apply_reads_this_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    c = Config()
    apply(c, demo(tmp_path))
    assert service(c, "demo-admin")["api_token"] == "from-env"


def test_named_servers_only_when_asked_with_their_limit(tmp_path: Path) -> None:
    assert "allow_named_servers" not in applied(demo(tmp_path)).JupyterHub
    assert "allow_named_servers" not in applied(manager(tmp_path)).JupyterHub
    for limit in (0, 2):
        settings = demo_settings(tmp_path, 8000, 45001, 45002, 60, named_server_limit=limit)
        hub = applied(settings).JupyterHub
        assert hub.allow_named_servers is True
        assert hub.named_server_limit_per_user == limit


@pytest.mark.parametrize("which", ["manager", "demo"])
def test_the_hubs_sqlite_commits_do_not_wait_for_the_disk(tmp_path: Path, which: str) -> None:
    """JupyterHub commits on its event loop; with the rollback journal every commit
    waited for two fsyncs (hub/database.py). The hub's own session, built by
    JupyterHub from the config, is in WAL mode with synchronous=NORMAL."""
    settings = manager(tmp_path) if which == "manager" else demo(tmp_path)
    hub = applied(settings).JupyterHub
    Path(hub.db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    session = orm.new_session_factory(hub.db_url, **hub.db_kwargs)()
    session.add(orm.User(name="alice"))
    session.commit()
    assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    session.close()
    # The mode is the file's: any later reader (or a restarted hub) sees it.
    with contextlib.closing(sqlite3.connect(hub.db_url.removeprefix("sqlite:///"))) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT name FROM users").fetchall() == [("alice",)]


def test_other_databases_keep_their_own_connect_args() -> None:
    assert db_kwargs("postgresql://hub@db/jupyterhub") == {}
    assert db_kwargs("sqlite:///:memory:") == {} and db_kwargs("sqlite://") == {}
