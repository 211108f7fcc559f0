"""`hub.json`, what a cloudjhub hub is told at start: a pydantic model, its reader
and its writer.

It holds addresses, ports, commands and the paths of files, never a secret:
the proxy token and the passwords stay in their root-only files and are read
when the hub starts, and the demo's admin token comes from the hub's
environment. What every cloudjhub hub does regardless (the core spawner
settings, the culler and the reaper) is `apply`'s, not the file's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from ..config import load_model
from .signin_settings import Access, Lti13, OAuth

SETTINGS_ENV = "CLOUDJHUB_HUB_SETTINGS"
DEFAULT_SETTINGS = Path("/etc/cloudjhub/hub.json")

# Absolute, so what the hub reads never depends on the directory it starts in.
FilePath = Annotated[str, Field(pattern=r"^/")]
Port = Annotated[int, Field(ge=1, le=65535)]
Command = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
TraitName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
ClassName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
JupyterHubConfig = dict[ClassName, dict[TraitName, JsonValue]]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Tls(_Settings):
    """The certificate and key the hub serves HTTPS with."""

    cert: FilePath
    key: FilePath


class ProxySettings(_Settings):
    """configurable-http-proxy, which the hub starts."""

    api_url: Annotated[str, Field(pattern=r"^https?://")]
    command: Command
    pid_file: FilePath
    # None: the hub makes up a token itself (the demo); a manager keeps it in a file.
    auth_token_file: FilePath | None = None


class SharedPassword(_Settings):
    """One password for every user, another for `admin`, each in its own file."""

    kind: Literal["shared-password"] = "shared-password"
    user_password_file: FilePath
    admin_password_file: FilePath


class Native(_Settings):
    """JupyterHub's NativeAuthenticator: each user signs up with a password of their
    own, and an admin approves the account before it can sign in. The admin
    accounts are made by the hub itself, with the password in
    `admin_password_file`, before anyone can sign up under their names."""

    kind: Literal["native"] = "native"
    admin_password_file: FilePath


class Dummy(_Settings):
    """Any name, any password: the demo's."""

    kind: Literal["dummy"] = "dummy"


class SpawnerSettings(_Settings):
    """The InstanceSpawner's paths, plus any of its traits (e.g. `hang_grace`)."""

    server_config_file: FilePath
    worker_command: Command
    usage_log: FilePath
    # The pinned host keys, kept apart from the hub's database (None: the trait's default).
    host_key_store: FilePath | None = None
    traits: dict[TraitName, JsonValue] = Field(default_factory=dict)


class ServiceSettings(_Settings):
    """What the hub-managed culler and reaper are started with."""

    # Runs the culler; the reaper is the `cloudjhub` beside it.
    python: FilePath
    idle_timeout: Annotated[int, Field(ge=1)]
    reaper_metrics_port: Port | None = None
    # Variables of the hub's environment that every service also gets, if set
    # (the demo's marker, by which it ends what a killed hub left running).
    pass_environment: list[EnvName] = Field(default_factory=list)


class HubSettings(_Settings):
    """Everything that differs between one cloudjhub hub and another."""

    bind_url: Annotated[str, Field(pattern=r"^https?://")]
    hub_ip: str
    hub_port: Port
    tls: Tls | None = None
    proxy: ProxySettings
    db_url: str
    cookie_secret_file: FilePath
    pid_file: FilePath
    authenticator: Native | SharedPassword | Dummy | OAuth | Lti13 = Field(discriminator="kind")
    admin_users: list[str] = Field(default_factory=lambda: ["admin"])
    access: Access = Access()
    spawner: SpawnerSettings
    services: ServiceSettings
    # If this variable of the hub's environment is set, its value is the token
    # of an admin service for scripts (the demo's); it is never written down.
    admin_token_env: EnvName | None = None
    # c.JupyterHub.allow_named_servers with this named_server_limit_per_user (0: no
    # limit); None: no named servers.
    named_server_limit: Annotated[int, Field(ge=0)] | None = None
    # More JupyterHub config, in traitlets' JSON form (class -> trait -> value),
    # merged last: e.g. {"JupyterHub": {"concurrent_spawn_limit": 300}} for a class
    # of 300 that logs in at once (`cloudjhub demo --hub-config FILE`).
    jupyterhub_config: JupyterHubConfig = Field(default_factory=dict)


def read_jupyterhub_config(path: Path) -> JupyterHubConfig:
    """A JupyterHub JSON config file (class -> trait -> value); ValueError names what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TypeAdapter(JupyterHubConfig).validate_python(data, strict=True)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "the top level"
        raise ValueError(
            f'{path}: at {where}: expected {{"ClassName": {{"trait_name": value}}}}'
        ) from None


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(SETTINGS_ENV) or DEFAULT_SETTINGS)


def load_settings(path: str | os.PathLike[str] | None = None) -> HubSettings:
    """Read and validate; a bad file fails with a message naming it and the field."""
    return load_model(HubSettings, Path(path) if path else settings_path())


def write_settings(settings: HubSettings, path: str | os.PathLike[str]) -> Path:
    """Write atomically, mode 0600: a restarting hub never reads half a file, and
    only its owner learns where the secrets are kept."""
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(settings.model_dump(), indent=2) + "\n")
    tmp.replace(target)
    return target
