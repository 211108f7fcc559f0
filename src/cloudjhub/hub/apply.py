"""Settings onto a JupyterHub config: what `jupyterhub_config.py` does, as a plain
function a test can call with a `traitlets.config.Config`.

Secrets are read here, from their files, when the hub starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from traitlets.config import Config

from .services import hub_services
from .settings import HubSettings, SharedPassword


def _secret(path: str) -> str:
    return Path(path).read_text().strip()


def apply(c: Config, settings: HubSettings, environ: Mapping[str, str] | None = None) -> None:
    """Set on `c` everything a cloudjhub hub is configured with.

    `environ` is the hub's environment (default: this process's), which the
    services' environments and the optional admin token come from.
    """
    env = os.environ if environ is None else environ
    hub, proxy = c.JupyterHub, c.ConfigurableHTTPProxy
    hub.bind_url = settings.bind_url
    if settings.tls is not None:
        hub.ssl_cert = settings.tls.cert
        hub.ssl_key = settings.tls.key
    hub.hub_ip = settings.hub_ip
    hub.hub_port = settings.hub_port
    proxy.api_url = settings.proxy.api_url
    proxy.command = list(settings.proxy.command)
    if settings.proxy.auth_token_file is not None:
        proxy.auth_token = _secret(settings.proxy.auth_token_file)
    proxy.pid_file = settings.proxy.pid_file
    hub.db_url = settings.db_url
    hub.cookie_secret_file = settings.cookie_secret_file
    hub.pid_file = settings.pid_file

    auth = settings.authenticator
    hub.authenticator_class = auth.kind
    if isinstance(auth, SharedPassword):
        c.SharedPasswordAuthenticator.user_password = _secret(auth.user_password_file)
        c.SharedPasswordAuthenticator.admin_password = _secret(auth.admin_password_file)
    c.Authenticator.admin_users = set(settings.admin_users)
    c.Authenticator.allow_all = True

    # Restarting the hub must not stop every user's instance.
    hub.cleanup_servers = False
    # Activity comes from the servers' own reports, not from proxy traffic,
    # which an open but idle browser tab generates forever.
    hub.last_activity_interval = 0
    hub.spawner_class = "cloudjhub"
    spawner = c.InstanceSpawner
    spawner.server_config_file = settings.spawner.server_config_file
    spawner.worker_command = list(settings.spawner.worker_command)
    spawner.usage_log = settings.spawner.usage_log
    if settings.spawner.host_key_store is not None:
        spawner.host_key_store = settings.spawner.host_key_store
    for name, value in settings.spawner.traits.items():
        spawner[name] = value

    hub.services, hub.load_roles = hub_services(settings, env)
