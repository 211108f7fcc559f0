"""Everything `cloudjhub launch` is told, validated once."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..backup_schedule import BadSchedule, to_dlm, validate_retain
from ..config import InstanceConfig
from ..shared_folder import SharedSettings
from ..tags import validate_cluster_name, workers_key_name
from .signin import AUTHENTICATORS, Authenticator, SignIn, authenticator_named

__all__ = ["AUTHENTICATORS", "Authenticator", "LaunchOptions", "authenticator_named"]


class LaunchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str
    base_ami: str
    private_subnet: str
    public_subnet: str
    instance: InstanceConfig = InstanceConfig()
    key_name: str = Field(min_length=1)
    key_file: Path
    instance_profile: str | None = None
    admin_cidr: str | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    ssh_port: int = Field(22, ge=1, le=65535)
    hub_port: int = Field(80, ge=1, le=65535)
    connect_via: str = Field("public", pattern=r"^(public|private)$")
    known_hosts: Path | None = None
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    authenticator: Authenticator = "native"
    signin: SignIn | None = None
    # --profiles FILE, checked: the hub's c.InstanceSpawner.profile_list.
    profiles: list[dict[str, Any]] | None = None
    output_dir: Path = Path()
    dry_run: bool = False
    keep_on_failure: bool = False
    # Backups (Data Lifecycle Manager): the schedule as DLM's cron(...), checked.
    backup_schedule: str | None = None
    backup_retain: int = 7
    backup_role: str | None = None
    # The shared course folder (--shared-storage, --course, --dropbox), checked.
    shared: SharedSettings | None = None
    timeout: float = Field(1800.0, gt=0)
    poll: float = Field(5.0, ge=0)

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        return validate_cluster_name(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> LaunchOptions:
        if (self.ssl_cert is None) != (self.ssl_key is None):
            raise ValueError("--ssl-cert and --ssl-key go together")
        return self

    @model_validator(mode="after")
    def _one_authenticator(self) -> LaunchOptions:
        if self.signin is not None and self.signin.authenticator != self.authenticator:
            raise ValueError("--authenticator and the sign-in options disagree")
        return self

    @field_validator("backup_schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return to_dlm(value)
        except BadSchedule as exc:
            raise ValueError(f"--backup-schedule {value!r}: {exc}") from exc

    @field_validator("backup_retain")
    @classmethod
    def _retain(cls, value: int) -> int:
        return validate_retain(value)

    @field_validator("admin_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value, strict=False)
        return value

    @property
    def sign_in(self) -> SignIn:
        """The sign-in options (just --authenticator unless more were given)."""
        return self.signin or SignIn(authenticator=self.authenticator)

    @property
    def tls(self) -> bool:
        return self.ssl_cert is not None

    @property
    def public_ports(self) -> tuple[int, ...]:
        """What the manager serves: the hub's port, and 80 to redirect to 443."""
        if self.tls and self.hub_port == 443:
            return (443, 80)
        return (self.hub_port,)

    @property
    def workers_key_name(self) -> str:
        return workers_key_name(self.cluster)

    @property
    def record_file(self) -> Path:
        return self.output_dir / f"cloudjhub-{self.cluster}-resources.json"

    @property
    def admin_password_file(self) -> Path:
        return self.output_dir / f"cloudjhub-{self.cluster}-admin-password"

    @property
    def server_config_file(self) -> Path:
        return self.output_dir / "server_config.json"
