"""jupyterhub_config.py for a cluster's manager, and where the proxy lives.

The config reads every secret from a root-only file at hub start, so no
secret is ever written into the config itself or passed on a command line.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..reaper import REAPER_SCOPES

REPO_ROOT = Path(__file__).resolve().parents[3]
CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")


def find_proxy() -> str:
    """configurable-http-proxy from PATH or this checkout's node_modules."""
    for candidate in (
        os.environ.get("CLOUDJHUB_PROXY_COMMAND"),
        shutil.which("configurable-http-proxy"),
        str(REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "configurable-http-proxy not found: run `npm install` in the cloudjhub checkout "
        "or `npm install -g configurable-http-proxy`"
    )


def culler_every(timeout: int) -> int:
    """Check often enough that a server is culled within ~1.25 x the timeout."""
    return max(2, min(600, timeout // 4))


@dataclass(frozen=True)
class ManagerHub:
    etc: Path  # holds server_config.json and the secret files
    state: Path  # the hub database
    bind_ip: str  # the manager's private IP: hub API and proxy API listen here
    public_port: int
    python: str
    proxy: str
    worker_command: tuple[str, ...]
    idle_timeout: int
    tls: tuple[Path, Path] | None = None  # certificate, key


def core_lines(server_config: Path, worker_command: list[str], usage_log: Path) -> list[str]:
    """What every cloudjhub hub config says, the demo's and a manager's alike."""
    return [
        "# Restarting the hub must not stop every user's instance.",
        "c.JupyterHub.cleanup_servers = False",
        "# Activity comes from the servers' own reports, not from proxy traffic,",
        "# which an open but idle browser tab generates forever.",
        "c.JupyterHub.last_activity_interval = 0",
        "c.JupyterHub.spawner_class = 'cloudjhub'",
        f"c.InstanceSpawner.server_config_file = {str(server_config)!r}",
        f"c.InstanceSpawner.worker_command = {worker_command!r}",
        f"c.InstanceSpawner.usage_log = {str(usage_log)!r}",
    ]


def service_lines(
    python: str,
    idle_timeout: int,
    usage_log: Path,
    server_config_expr: str,
    extra_env: str = "{}",
    reaper_args: tuple[str, ...] = (),
) -> list[str]:
    """The culler and the reaper as hub-managed services, each with only its scopes.

    Services get only the environment given here: `extra_env` (a Python
    expression in the config), and for the reaper the cluster's config and the
    AWS chain's variables (the instance role's, on a manager)."""
    cli = str(Path(python).with_name("cloudjhub"))
    every = culler_every(idle_timeout)
    return [
        "_aws = {k: v for k, v in os.environ.items() if k.startswith('AWS_')}",
        "c.JupyterHub.services = [",
        f"    {{'name': 'idle-culler', 'environment': {extra_env}, 'command': [",
        f"        {python!r}, '-m', 'jupyterhub_idle_culler',",
        f"        '--timeout={idle_timeout}', '--cull-every={every}',",
        "    ]},",
        "    {'name': 'cloudjhub-reaper', 'command': [",
        f"        {cli!r}, 'reap', '--usage-log', {str(usage_log)!r}, *{list(reaper_args)!r},",
        "    ], 'environment': {",
        f"        'CLOUDJHUB_SERVER_CONFIG': {server_config_expr}, **_aws, **{extra_env},",
        "    }},",
        "]",
        "c.JupyterHub.load_roles = [",
        f"    {{'name': 'idle-culler', 'services': ['idle-culler'], 'scopes': {list(CULLER_SCOPES)!r}}},",
        "    {'name': 'cloudjhub-reaper', 'services': ['cloudjhub-reaper'],",
        f"     'scopes': {list(REAPER_SCOPES)!r}}},",
        "]",
    ]


def render_manager_config(hub: ManagerHub) -> str:
    scheme = "https" if hub.tls else "http"
    tls_lines = []
    proxy_command = [hub.proxy]
    if hub.tls:
        tls_lines = [
            f"c.JupyterHub.ssl_cert = {str(hub.tls[0])!r}",
            f"c.JupyterHub.ssl_key = {str(hub.tls[1])!r}",
        ]
        if hub.public_port == 443:
            proxy_command += ["--redirect-port", "80"]
    usage_log = hub.state / "usage.jsonl"
    config = hub.etc / "server_config.json"
    secret = lambda name: f"open({str(hub.etc / name)!r}).read().strip()"  # noqa: E731
    return "\n".join(
        [
            "# Written by `cloudjhub setup-manager`; rerunning it rewrites this file.",
            "import os",
            "c = get_config()  # noqa: F821",
            f"c.JupyterHub.bind_url = '{scheme}://{hub.bind_ip}:{hub.public_port}'",
            *tls_lines,
            f"c.JupyterHub.hub_ip = {hub.bind_ip!r}",
            "c.JupyterHub.hub_port = 8081",
            f"c.ConfigurableHTTPProxy.api_url = 'http://{hub.bind_ip}:8001'",
            f"c.ConfigurableHTTPProxy.command = {proxy_command!r}",
            f"c.ConfigurableHTTPProxy.auth_token = {secret('proxy_token')}",
            f"c.ConfigurableHTTPProxy.pid_file = {str(hub.state / 'proxy.pid')!r}",
            f"c.JupyterHub.db_url = {'sqlite:///' + str(hub.state / 'jupyterhub.sqlite')!r}",
            f"c.JupyterHub.cookie_secret_file = {str(hub.etc / 'cookie_secret')!r}",
            f"c.JupyterHub.pid_file = {str(hub.state / 'jupyterhub.pid')!r}",
            "c.JupyterHub.authenticator_class = 'shared-password'",
            f"c.SharedPasswordAuthenticator.user_password = {secret('user_password')}",
            f"c.SharedPasswordAuthenticator.admin_password = {secret('admin_password')}",
            "c.Authenticator.admin_users = {'admin'}",
            "c.Authenticator.allow_all = True",
            *core_lines(config, list(hub.worker_command), usage_log),
            *service_lines(hub.python, hub.idle_timeout, usage_log, repr(str(config))),
            "",
        ]
    )
