"""The two JSON files, `instance_config.json` and `server_config.json`.

This module is their only reader and writer, so a bad file fails in one place
with a message that names the file and the field. `error_line` is that message,
for every pydantic model of ours: the lowest floor that uses pydantic owns it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .hibernation import unsupported_reason

# The pool's size, states and windows are declared beside its schedule; re-exported.
from .pool_schedule import POOL_STATES as POOL_STATES
from .pool_schedule import PoolSize, PoolWindow, parse_windows, time_zone

INSTANCE_CONFIG_FILE = "instance_config.json"
SERVER_CONFIG_FILE = "server_config.json"
SERVER_CONFIG_ENV = "CLOUDJHUB_SERVER_CONFIG"

# AWS rejects a root volume smaller than the base image (8 GB for stock images).
MIN_EBS_SIZE = 8

EbsSize = Annotated[int, Field(ge=MIN_EBS_SIZE, le=16384)]
# 0 would make the culler stop every server at once; there is no "never".
Seconds = Annotated[int, Field(ge=1)]

# AWS tag limits: key 1-128, value 0-256 characters of letters, digits, spaces and
# + - = . _ : / @ (EC2 User Guide, "Tag restrictions"); aws: is AWS's own, and
# cloudjhub: and Name are what marks a resource as ours.
TAG_CHARS = r"[\w .:+=@/-]"


def _free_tag_key(key: str) -> str:
    if key.lower().startswith(("aws:", "cloudjhub:")) or key == "Name":
        raise ValueError(f"tag key {key!r} is reserved (aws:, cloudjhub:, Name)")
    return key


TagKey = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=rf"^{TAG_CHARS}*$"),
    AfterValidator(_free_tag_key),
]
# A template: {username}, {servername} and {profile} are filled in per launch.


def _known_placeholders(value: str) -> str:
    rest = value
    for name in ("{username}", "{servername}", "{profile}"):
        rest = rest.replace(name, "")
    if "{" in rest or "}" in rest:
        raise ValueError("only {username}, {servername} and {profile} may be in braces")
    return value


TagValue = Annotated[
    str,
    Field(max_length=256, pattern=r"^[\w .:+=@/{}-]*$"),
    AfterValidator(_known_placeholders),
]


class ConfigError(ValueError):
    """A configuration file is missing, malformed or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _SharedKeys(_Strict):
    """The keys both files have, with one type and one check each.

    Pydantic validates fields in declaration order (a subclass that redeclares one
    keeps its place), and the hibernation check on WORKER_INSTANCE_TYPE reads
    HIBERNATE, so HIBERNATE must come first.
    """

    REGION: str
    # Launch hibernation-capable workers and hibernate them on stop; see hibernation.py.
    HIBERNATE: bool = False
    # The worker image carries the NVIDIA driver and CUDA runtime: the launcher builds
    # it so (--gpu-image; a CUSTOM_WORKER_AMI is taken at the admin's word) and the
    # hub then lets GPU profiles use it (profile_types.py).
    GPU_IMAGE: bool = False
    WORKER_INSTANCE_TYPE: str = "t3.medium"
    WORKER_EBS_SIZE: EbsSize = 8
    USER_HOME_EBS_SIZE: Annotated[int, Field(ge=0, le=16384)] = 0
    JUPYTER_NOTEBOOK_TIMEOUT: Seconds = 3600
    WORKER_USERNAME: str = "ubuntu"
    SERVER_OWNER: str = ""
    WARM_POOL_SIZE: PoolSize = 0
    # Private subnets (in different zones) for workers, in order; a launch AWS has
    # no capacity for in one is tried in the next. Empty: SUBNET_ID (server_config) alone.
    SUBNET_IDS: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]+$")]] = []
    # Added to every worker and volume, e.g. {"course": "intro", "who": "{username}"}.
    EXTRA_TAGS: dict[TagKey, TagValue] = Field(default_factory=dict)
    # Windows when the pool has another size (see pool_schedule.py), in this time zone.
    WARM_POOL_SCHEDULE: list[PoolWindow] = Field(default_factory=list)
    WARM_POOL_TIME_ZONE: str = "UTC"

    @field_validator("WARM_POOL_SCHEDULE", mode="before")
    @classmethod
    def _check_schedule(cls, raw: object) -> list[PoolWindow]:
        try:
            return parse_windows(raw)
        except ValueError as exc:
            raise PydanticCustomError("schedule", str(exc)) from None

    @field_validator("WARM_POOL_TIME_ZONE")
    @classmethod
    def _check_time_zone(cls, name: str) -> str:
        try:
            time_zone(name)
        except ValueError as exc:
            raise PydanticCustomError("time_zone", str(exc)) from None
        return name

    @field_validator("WORKER_INSTANCE_TYPE")
    @classmethod
    def _check_hibernation(cls, instance_type: str, info: ValidationInfo) -> str:
        """HIBERNATE needs a capable instance type; the error names WORKER_INSTANCE_TYPE."""
        reason = unsupported_reason(instance_type) if info.data.get("HIBERNATE") else None
        if reason:
            raise PydanticCustomError("hibernation", reason)
        return instance_type


class InstanceConfig(_SharedKeys):
    """Launch defaults (`instance_config.json`), with the original key names."""

    REGION: str = "us-east-1"  # a default here; server_config.json must say it
    MANAGER_INSTANCE_TYPE: str = "t3.small"
    CUSTOM_WORKER_AMI: str | None = None
    SERVER_USERNAME: str = "ubuntu"


class ServerConfig(_SharedKeys):
    """What the hub runs on (`server_config.json`), written by the launcher."""

    CLUSTER_NAME: Annotated[
        str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9-]*$")
    ]
    WORKER_AMI: str = Field(pattern=r"^ami-[0-9a-f]+$")
    SUBNET_ID: str = Field(pattern=r"^subnet-[0-9a-f]+$")
    WORKER_SECURITY_GROUPS: list[str] = Field(min_length=1)
    KEY_NAME: str = Field(min_length=1)
    MANAGER_IP: str = ""
    # Path, on the manager, of the private key matching KEY_NAME.
    SSH_KEY_FILE: str = "/etc/cloudjhub/worker_key"
    SSH_PORT: Annotated[int, Field(ge=1, le=65535)] = 22
    # Where the hub learns each new worker's SSH host key: "console" reads what
    # cloud-init prints to the EC2 console; "known_hosts" trusts SSH_KNOWN_HOSTS.
    SSH_HOST_KEY_SOURCE: str = Field("console", pattern=r"^(console|known_hosts)$")
    SSH_KNOWN_HOSTS: str = ""
    AWS_ENDPOINT_URL: str | None = None
    # The shared course folder (`launch --shared-storage efs`): "" for none.
    SHARED_STORAGE: str = Field("", pattern=r"^(efs)?$")
    SHARED_FILE_SYSTEM_ID: str = Field("", pattern=r"^(fs-[0-9a-f]{8,40})?$")
    SHARED_COURSE: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")
    SHARED_DROPBOX: bool = False
    # The instance profile workers launch with when there is shared storage: its role
    # may only mount the file system (launch/iam_shared.py); "" for none.
    SHARED_WORKER_INSTANCE_PROFILE: str = Field("", pattern=r"^([\w+=,.@-]{1,128})?$")


def worker_subnets(subnet_id: str, subnet_ids: list[str]) -> list[str]:
    """SUBNET_IDS as the launcher writes it: SUBNET_ID first, then the others;
    empty when there is no other (SUBNET_ID alone says it all)."""
    subnets = list(dict.fromkeys([subnet_id, *subnet_ids]))
    return subnets if len(subnets) > 1 else []


M = TypeVar("M", bound=BaseModel)


def error_line(error: ValidationError, source: str | os.PathLike[str] | None = None) -> str:
    """The first of a pydantic error's complaints as one line a person can act on.

    With a source (a file, "launch arguments"): "<source>: field <field>: <why>".
    Without one, for a caller that says where itself (a line of a log, a command's
    options): "<field>: <why>".
    """
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    why = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{source}: field {field}: {why}" if source is not None else f"{field}: {why}"


# No settings file comes near this; a bigger one is a mistake, not a config.
MAX_FILE_BYTES = 1 << 20


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large a number")
    return number


def parse_json(raw: bytes, source: str | os.PathLike[str]) -> Any:
    """JSON from outside, or a ConfigError naming `source`: UTF-8, at most
    MAX_FILE_BYTES, finite numbers, and no nesting or number too deep to read."""
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES // 1024} KB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from exc
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # an integer of thousands of digits, NaN, 1e400
        why = str(exc) if "JSON allows" in str(exc) or "too large" in str(exc) else ""
        raise ConfigError(
            f"{source}: not valid JSON: {why or 'a number too long to read'}"
        ) from exc


def read_json(path: Path) -> Any:
    """A JSON file, read as `parse_json` reads (and never more than its limit)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_json(raw, path)


def check_warm_pool(size: object, state: object) -> None:
    """The hub's warm-pool settings, refused at hub start with one line naming the
    setting and the value (a bool is not a size, though Python counts it an int)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 1000:
        raise ConfigError(f"warm_pool_size: {size!r} is not allowed: a whole number, 0-1000")
    if state not in POOL_STATES:
        raise ConfigError(
            f"warm_pool_state: {state!r} is not allowed: one of {', '.join(POOL_STATES)}"
        )


def check_warm_pool_schedule(schedule: object, zone: object) -> None:
    """The schedule's settings, refused at hub (and keeper) start with one line naming
    the setting and the value."""
    try:
        parse_windows(schedule)
    except ValueError as exc:
        raise ConfigError(f"warm_pool_schedule: {exc}") from None
    try:
        if not isinstance(zone, str):
            raise ValueError(f"{zone!r} is not an IANA time zone name")
        time_zone(zone)
    except ValueError as exc:
        raise ConfigError(f"warm_pool_time_zone: {exc}") from None


def load_model(model: type[M], path: Path) -> M:
    """Any JSON settings file into its model, failing with one message naming the
    file and the field (the hub's settings file is read this way too)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(error_line(exc, path)) from exc


def load_instance_config(path: str | os.PathLike[str] = INSTANCE_CONFIG_FILE) -> InstanceConfig:
    """Read launch defaults; a missing file means all defaults."""
    p = Path(path)
    if not p.exists():
        return InstanceConfig()
    return load_model(InstanceConfig, p)


def server_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    return Path(path or os.environ.get(SERVER_CONFIG_ENV) or SERVER_CONFIG_FILE)


def load_server_config(path: str | os.PathLike[str] | None = None) -> ServerConfig:
    return load_model(ServerConfig, server_config_path(path))


def write_server_config(config: ServerConfig, path: str | os.PathLike[str]) -> Path:
    """Write atomically so a hub restarting mid-write never reads half a file."""
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(config.model_dump(), indent=2, sort_keys=True) + "\n")
    tmp.replace(target)
    return target


def server_config_from(data: dict[str, Any], source: str = "<arguments>") -> ServerConfig:
    """Validate a dict built in code with the same error message as a file."""
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(error_line(exc, source)) from exc
