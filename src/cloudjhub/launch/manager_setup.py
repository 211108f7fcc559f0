"""cloudjhub's own setup of a manager, run ON the manager by `cloudjhub setup-manager`.

It writes configs, keys and the hub's unit under a root prefix and starts the
hub, and nothing else: OS packages and the hub's system user are the install
script's job. Secrets (cookie secret, proxy token, passwords, the workers' SSH
key) are generated here and never leave the machine, except the admin's
password, which goes back to the launcher over the SSH channel; the reply also
holds the workers' public key. On a real manager (root `/`) the hub runs as
`SERVICE_USER`, which owns its state and the secrets it reads; under a root
prefix (the local cloud) everything belongs to whoever runs this.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from ..config import server_config_from, write_server_config
from ..hub.proxy import find_proxy
from ..hub.settings import (
    SETTINGS_ENV,
    HubSettings,
    Native,
    ProxySettings,
    ServiceSettings,
    SharedPassword,
    SpawnerSettings,
    Tls,
    write_settings,
)
from ..hub.signin_settings import OAuth
from ..keys import ensure_ed25519
from ..profiles import parse as parse_profiles
from .manager_shared import mount_on_manager
from .options import Authenticator
from .signin import CLIENT_SECRET_FILE, SignIn
from .units import HUB_UNIT, Unit, install_unit, run_unit_directly

WORKER_KEY = "worker_key"
SERVICE_USER = "cloudjhub"
SECRET_FILES = {
    "cookie_secret": lambda: secrets.token_hex(32),
    "proxy_token": lambda: secrets.token_hex(32),
    "user_password": lambda: secrets.token_urlsafe(12),
    "admin_password": lambda: secrets.token_urlsafe(32),
    "users_token": lambda: secrets.token_hex(32),
}
HUB_API_PORT, PROXY_API_PORT = 8081, 8001
# What the unit runs: a stub that runs the config cloudjhub ships, so an admin
# still has /etc/cloudjhub/jupyterhub_config.py for lines of their own (an OAuth
# authenticator, say). exec, not load_subconfig: that one silently skips a
# missing file, and a hub must not start on JupyterHub's defaults.
STUB_CONFIG = """\
# Written by `cloudjhub setup-manager`; rerunning it rewrites this file.
# Runs the config cloudjhub ships, which applies $CLOUDJHUB_HUB_SETTINGS (hub.json).
from cloudjhub.hub import CONFIG_FILE

exec(compile(CONFIG_FILE.read_bytes(), CONFIG_FILE, "exec"))  # noqa: S102
"""


class TlsFiles(BaseModel):
    """The admin's certificate and key, sent over the SSH channel."""

    model_config = ConfigDict(extra="forbid")

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


class SetupRequest(BaseModel):
    """What the launcher sends on stdin."""

    model_config = ConfigDict(extra="forbid")

    server_config: dict[str, Any]
    bind_ip: IPv4Address  # goes into generated config: an address and nothing else
    public_port: int = Field(80, ge=1, le=65535)
    worker_command: list[str] = Field(min_length=1)
    tls: TlsFiles | None = None
    # Who signs in and how (the client secret included); None: --authenticator alone.
    signin: SignIn | None = None
    # c.InstanceSpawner.profile_list (launch --profiles); checked again at hub start.
    profile_list: list[JsonValue] | None = None

    @field_validator("profile_list")
    @classmethod
    def _profiles(cls, value: list[JsonValue] | None) -> list[JsonValue] | None:
        if value is not None:
            parse_profiles(value)  # its ValueError names the profile and field
        return value


def _private_file(path: Path, make: Any) -> None:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
    path.chmod(0o600)


def service_owner(root: Path) -> tuple[int, int] | None:
    """uid and gid of the hub's system user on a real manager; None under a prefix."""
    if root != Path("/"):
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ValueError(
            f"no system user {SERVICE_USER!r}: run install-manager.sh on this machine first"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _hand_over(etc: Path, state: Path, owner: tuple[int, int] | None) -> None:
    """The hub's user gets its state and the files it reads (each still mode 0600);
    /etc/cloudjhub itself stays root's, so the hub cannot add or swap files there."""
    if owner is None:
        return
    uid, gid = owner
    os.chown(etc, 0, gid)
    etc.chmod(0o750)
    for path in [*etc.rglob("*"), state, *state.rglob("*")]:
        if not path.is_symlink():
            os.chown(path, uid, gid)


def _worker_key(etc: Path) -> str:
    return ensure_ed25519(etc / WORKER_KEY, "cloudjhub-manager")


def _stop_running_hub(state: Path) -> None:
    """Emulated restart: end the hub this unit started before (checked by cmdline)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((state / "jupyterhub.pid").read_text().strip())
        if b"jupyterhub" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)


def hub_settings(
    etc: Path,
    state: Path,
    request: SetupRequest,
    idle_timeout: int,
    tls: tuple[Path, Path] | None,
    python: str,
    authenticator: Authenticator = "native",
) -> HubSettings:
    """The manager's hub: on its private IP, secrets in `etc`, state in `state`."""
    ip = str(request.bind_ip)
    signin = request.signin or SignIn(authenticator=authenticator)
    scheme = "https" if tls else "http"
    external = signin.hub_authenticator(etc, f"{scheme}://{ip}:{request.public_port}/")
    proxy_command = [find_proxy()]
    if tls and request.public_port == 443:
        proxy_command += ["--redirect-port", "80"]
    return HubSettings(
        bind_url=f"{'https' if tls else 'http'}://{ip}:{request.public_port}",
        hub_ip=ip,
        hub_port=HUB_API_PORT,
        tls=Tls(cert=str(tls[0]), key=str(tls[1])) if tls else None,
        proxy=ProxySettings(
            api_url=f"http://{ip}:{PROXY_API_PORT}",
            command=proxy_command,
            pid_file=str(state / "proxy.pid"),
            auth_token_file=str(etc / "proxy_token"),
        ),
        db_url="sqlite:///" + str(state / "jupyterhub.sqlite"),
        cookie_secret_file=str(etc / "cookie_secret"),
        pid_file=str(state / "jupyterhub.pid"),
        authenticator=external
        or (
            Native(admin_password_file=str(etc / "admin_password"))
            if authenticator == "native"
            else SharedPassword(
                user_password_file=str(etc / "user_password"),
                admin_password_file=str(etc / "admin_password"),
            )
        ),
        admin_users=signin.admins(),
        access=signin.access(etc),
        spawner=SpawnerSettings(
            server_config_file=str(etc / "server_config.json"),
            worker_command=list(request.worker_command),
            usage_log=str(state / "usage.jsonl"),
            host_key_store=str(state / "host_keys.json"),
            traits={"profile_list": request.profile_list} if request.profile_list else {},
        ),
        services=ServiceSettings(python=python, idle_timeout=idle_timeout),
    )


def setup_manager(
    root: Path,
    request: SetupRequest,
    start: bool = True,
    authenticator: Authenticator = "native",
) -> dict[str, str]:
    owner = service_owner(root)
    etc = root / "etc" / "cloudjhub"
    state = root / "var" / "lib" / "cloudjhub"
    etc.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_key = _worker_key(etc)
    for name, make in SECRET_FILES.items():
        _private_file(etc / name, make)
    config = server_config_from(
        {**request.server_config, "SSH_KEY_FILE": str(etc / WORKER_KEY)}, "setup request"
    )
    write_server_config(config, etc / "server_config.json")
    mount_on_manager(root, config)  # /srv/shared, for `cloudjhub release`
    secret_file = etc / CLIENT_SECRET_FILE
    secret_file.unlink(missing_ok=True)  # a re-run with other sign-in options replaces it
    if request.signin is not None and request.signin.client_secret is not None:
        _private_file(secret_file, lambda: str(request.signin.client_secret))
    tls = None
    if request.tls is not None:
        ssl_dir = etc / "ssl"
        ssl_dir.mkdir(mode=0o700, exist_ok=True)
        for name, text in (("hub.crt", request.tls.cert), ("hub.key", request.tls.key)):
            path = ssl_dir / name
            path.unlink(missing_ok=True)
            _private_file(path, lambda text=text: text.strip())
        tls = (ssl_dir / "hub.crt", ssl_dir / "hub.key")
    python = sys.executable
    settings = hub_settings(
        etc, state, request, config.JUPYTER_NOTEBOOK_TIMEOUT, tls, python, authenticator
    )
    write_settings(settings, etc / "hub.json")
    (etc / "jupyterhub_config.py").write_text(STUB_CONFIG)
    _hand_over(etc, state, owner)
    unit = Unit(
        description=f"cloudjhub JupyterHub for cluster {config.CLUSTER_NAME}",
        exec_start=[python, "-m", "jupyterhub", "-f", str(etc / "jupyterhub_config.py")],
        working_directory=str(state),
        environment={
            "CLOUDJHUB_SERVER_CONFIG": str(etc / "server_config.json"),
            SETTINGS_ENV: str(etc / "hub.json"),
            "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        },
        user=SERVICE_USER,
        writable_paths=(str(state),),
        # configurable-http-proxy, the hub's child, binds the public port (80/443).
        capabilities=("CAP_NET_BIND_SERVICE",),
    )
    path = install_unit(root, HUB_UNIT, unit)
    if start:
        if root == Path("/"):
            for args in (["daemon-reload"], ["enable", HUB_UNIT], ["restart", HUB_UNIT]):
                subprocess.run(["systemctl", *args], check=True)
        else:
            _stop_running_hub(state)
            run_unit_directly(path, root / "var" / "log" / "cloudjhub-hub.log")
    callback = (
        settings.authenticator.callback_url if isinstance(settings.authenticator, OAuth) else None
    )
    if request.signin is not None and request.signin.authenticator == "lti13":
        callback = request.signin.callback_url(settings.bind_url)
    reply: dict[str, Any] = {
        "worker_public_key": public_key,
        "callback_url": callback or "",
        "hub_config": str(etc / "jupyterhub_config.py"),
        "hub_settings": str(etc / "hub.json"),
        "authenticator": authenticator,
    }
    if isinstance(settings.authenticator, Native | SharedPassword):
        # For the launcher to keep in a file of its own: the one way in as `admin`.
        reply["admin_password"] = (etc / "admin_password").read_text().strip()
    return reply


def main_json(root: Path, raw: str, start: bool, authenticator: Authenticator = "native") -> str:
    request = SetupRequest.model_validate(json.loads(raw))
    return json.dumps(setup_manager(root, request, start, authenticator))
