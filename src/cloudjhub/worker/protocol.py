"""The hub-to-worker contract: the ``start`` request, its reply, exit codes and errors.

Both sides import this module, so the contract is written once: the spawner builds its
request and parses the reply with it, ``cloudjhub-worker`` validates the request and
writes the reply with it. It lives in ``worker/`` because the worker imports nothing
hub-side; it imports only pydantic, the standard library and ``contract`` (its
parts that need no pydantic).

Pydantic rather than dataclasses: strict fields reject what JSON makes easy to get
wrong (``true`` or ``"8888"`` for a port, ``1.5`` for whole seconds) without a
hand-written check per field, and every error names its field. Each error becomes one
line from ``_PROBLEMS``, never pydantic's own multi-line text; env values (the API
token travels in env) are never echoed, and ``hide_input_in_errors`` keeps them out of
a ValidationError's text too. A bad message raises ProtocolError in one line whether
the hub builds it or the agent reads it, so both report it alike.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import IO, Annotated, Any, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import ErrorDetails

# Re-exported, as the contract is read from here; see contract for why they live there.
from .contract import EXIT_BAD_REQUEST as EXIT_BAD_REQUEST
from .contract import EXIT_FAILURE as EXIT_FAILURE
from .contract import MAX_LOG_LINES as MAX_LOG_LINES
from .contract import RELEASE_NAME_RE as RELEASE_NAME_RE
from .contract import RESTORED_RE as RESTORED_RE
from .contract import SHA256_RE as SHA256_RE
from .contract import USER_RE as USER_RE
from .contract import AgentError as AgentError
from .contract import check_release_name as check_release_name

EXIT_SERVER_EXITED = 3
EXIT_SERVER_TIMEOUT = 4
# The user's home is full: the message is for the user, as it is.
EXIT_HOME_FULL = 5

# Accounts images already have: a hub user of that name gets a mapped name.
RESERVED_ACCOUNTS = frozenset({"root", "ubuntu", "admin", "ec2-user", "debian", "nobody"})
# Names the agent maps to when an account of the user's name is not its own; no hub
# name is kept as is with this prefix, so a mapped name is never someone's own name.
MAPPED_PREFIX = "cjh-"
VOLUME_ID_RE = re.compile(r"^vol-[0-9A-Za-z]{1,64}$")
DEVICE_RE = re.compile(r"^/dev/[A-Za-z0-9_/.-]{1,200}$")
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]{8,40}$")
MAX_VOLUME_GB = 16384
DEFAULT_START_TIMEOUT = 60.0
# The shared course folder: an EFS file system's id, the course (a folder of it), a region.
FILE_SYSTEM_ID_RE = re.compile(r"^fs-[0-9a-f]{8,40}$")
COURSE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
MAX_RELEASES = 100
# Bounds that keep every number finite and usable as a time: a start that takes over an
# hour, or a self-stop after over a year, is a mistake (or an attack), not a setting.
MAX_START_TIMEOUT = 3600.0
MAX_SECONDS = 366 * 24 * 3600
# A request is a few KB; reading more is how a caller would make the agent slow or big.
MAX_REQUEST_BYTES = 1024 * 1024
# The per-spawn secrets in a start request's env; everything else describes the server.
TOKEN_VARS = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


class ProtocolError(AgentError):
    """A message that breaks the contract; the agent exits 2 for a bad request."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_BAD_REQUEST)


def posix_username(hub_user: str) -> str:
    """Map a hub username (which may be an e-mail address) to a safe account name.

    Names that are already safe are kept; others are lowered, stripped of unsafe
    characters and suffixed with a short hash (6 hex digits) so two hub users never
    share an account.
    """
    if (
        hub_user not in RESERVED_ACCOUNTS
        and not hub_user.startswith(MAPPED_PREFIX)
        and USER_RE.fullmatch(hub_user)
    ):
        return hub_user
    safe = re.sub(r"[^a-z0-9_-]", "-", hub_user.lower()).strip("-") or "user"
    if not re.match(r"^[a-z_]", safe):
        safe = "u" + safe
    digest = hashlib.sha256(hub_user.encode()).hexdigest()[:6]
    return f"{safe[:24]}-{digest}"


def mapped_account(user: str) -> str:
    """The account for ``user`` when the image already has an account of that name.

    Deterministic, so every instance maps a name alike; its hash has 8 hex digits
    where posix_username's has 6, and posix_username keeps no name with its prefix,
    so it never equals the account name of another hub user.
    """
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    return f"{MAPPED_PREFIX}{user[:19]}-{digest}"


def bad_request(message: str) -> NoReturn:
    """Reject the request: exit status 2, with the message as the one line on stderr."""
    raise ProtocolError(message)


# --------------------------------------------------------------------------- fields
# The checks pydantic's types cannot say. Their ValueError text is never shown:
# _PROBLEMS words every failure of a field.


def _user(value: str) -> str:
    """User names become account names and file names, so keep them strictly POSIX-ish."""
    if not USER_RE.fullmatch(value):
        raise ValueError("bad user name")
    return value


def _ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


def _env_name(name: str) -> str:
    if not name or "=" in name or "\0" in name:
        raise ValueError("bad variable name")
    return name


def _no_nul(text: str) -> str:
    if "\0" in text:
        raise ValueError("NUL in string")
    return text


def _program(cmd: list[str]) -> list[str]:
    if not cmd[0]:
        raise ValueError("empty program name")
    return cmd


def _volume_id(value: str) -> str:
    if not VOLUME_ID_RE.match(value):
        raise ValueError("bad volume id")
    return value


def _snapshot_id(value: str) -> str:
    if not SNAPSHOT_ID_RE.fullmatch(value):
        raise ValueError("bad snapshot id")
    return value


def _restored_name(value: str) -> str:
    if not RESTORED_RE.fullmatch(value):
        raise ValueError("must be restored-YYYY-MM-DD")
    return value


def _device(value: str) -> str:
    # Only a first filter: the agent resolves the path and checks the device itself.
    if not DEVICE_RE.fullmatch(value) or os.path.normpath(value) != value:
        raise ValueError("not a plain /dev/ path")
    return value


def _release_name(value: str) -> str:
    return check_release_name(value)


def _course(value: str) -> str:
    if not COURSE_RE.fullmatch(value) or value.strip(".") == "":
        raise ValueError("bad course name")
    return value


def _file_system_id(value: str) -> str:
    if not FILE_SYSTEM_ID_RE.fullmatch(value):
        raise ValueError("bad file system id")
    return value


def _region(value: str) -> str:
    if not REGION_RE.fullmatch(value):
        raise ValueError("bad region")
    return value


def _sha256(value: str) -> str:
    if not SHA256_RE.fullmatch(value):
        raise ValueError("bad digest")
    return value


Text = Annotated[str, Strict(), AfterValidator(_no_nul)]
EnvName = Annotated[str, Strict(), AfterValidator(_env_name)]
Seconds = Annotated[int, Strict(), Field(ge=0, le=MAX_SECONDS)]

_PROBLEMS: dict[str, Callable[[object], str]] = {
    "user": lambda v: f"invalid user {_short(v)}: must match {USER_RE.pattern}",
    "ip": lambda v: f"invalid ip {_short(v)}: not an IP address",
    "port": lambda v: f"invalid port {_short(v)}: must be an integer 1..65535",
    "env": lambda _v: "invalid env: must be an object of string to string",
    "cmd": lambda _v: "invalid cmd: must be a non-empty list of strings",
    "home_volume": lambda _v: "invalid home_volume: must be null or an object",
    "home_volume.volume_id": lambda v: f"invalid home_volume.volume_id {_short(v)}",
    "home_volume.device": lambda v: (
        f"invalid home_volume.device {_short(v)}: must be a plain /dev/ path"
    ),
    "timeout": lambda v: (
        f"invalid timeout {_short(v)}: must be a number of seconds above 0, "
        f"at most {MAX_START_TIMEOUT:g}"
    ),
    "idle_timeout": lambda v: (
        f"invalid idle_timeout {_short(v)}: must be a whole number of seconds, 0 to {MAX_SECONDS}"
    ),
    "self_stop_grace": lambda v: (
        f"invalid self_stop_grace {_short(v)}: must be a whole number of seconds, "
        f"0 to {MAX_SECONDS}"
    ),
    "resume": lambda v: f"invalid resume {_short(v)}: must be true or false",
    "shared": lambda _v: (
        "invalid shared: must be null or an object with a file_system_id (fs-...), a region, "
        f"a course matching {COURSE_RE.pattern}, and staff and dropbox true or false"
    ),
    "releases": lambda _v: (
        f"invalid releases: must be a list of at most {MAX_RELEASES} objects with a name "
        f"matching {RELEASE_NAME_RE.pattern} and a sha256 of 64 hex digits"
    ),
}


def _short(value: object) -> str:
    """A value as the error shows it: a 400-digit number need not be echoed whole."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problem(error: ErrorDetails) -> str:
    """One line for one validation error, naming the field and never an env value."""
    loc = [str(part) for part in error["loc"]]
    if loc[:1] == ["env"] and len(loc) > 1:
        if loc[2:] == ["[key]"]:
            return f"invalid env: bad variable name {loc[1]!r}"
        return f"invalid env: value of {loc[1]} must be a string"
    # A missing field reads as null, as the agent always put it ("invalid user None").
    value = None if error["type"] == "missing" else error.get("input")
    field = ".".join(loc[:2]) if loc[:1] == ["home_volume"] else ".".join(loc[:1])
    word = _PROBLEMS.get(field)
    if word is not None:
        return word(value)
    # Fields without a wording of their own (the reply's): pydantic's message, no input.
    return f"invalid {'.'.join(loc) or 'message'}: {error['msg']}"


# --------------------------------------------------------------------------- messages

# defer_build: a model's validator is built when first used, not at import; the agent's
# commands other than `start` (and the hub's processes that never send one) skip it.
_CONFIG = ConfigDict(frozen=True, hide_input_in_errors=True, defer_build=True)


class _Message(BaseModel):
    """A top-level message: a null field means its default, a bad one a ProtocolError."""

    model_config = _CONFIG

    @model_validator(mode="wrap")
    @classmethod
    def _one_line(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(data, Mapping):
            data = {key: value for key, value in data.items() if value is not None}
        try:
            return handler(data)
        except ValidationError as exc:
            # Not a ValueError, so pydantic lets it through; fields are checked in
            # order, so the first error is the one the agent always reported.
            raise ProtocolError(problem(exc.errors()[0])) from None


class HomeVolume(BaseModel):
    """The EBS volume holding the user's home, as attached by the hub."""

    model_config = _CONFIG

    volume_id: Annotated[str, Strict(), AfterValidator(_volume_id)]
    device: Annotated[str, Strict(), AfterValidator(_device)] | None = None
    # Its size as EBS has it (the file system is grown to it), and the snapshot it was
    # made from: only the emulated local cloud reads that, to fill its directory.
    size_gb: Annotated[int, Strict(), Field(ge=1, le=MAX_VOLUME_GB)] | None = None
    from_snapshot: Annotated[str, Strict(), AfterValidator(_snapshot_id)] | None = None


class RestoredFolder(HomeVolume):
    """A volume made from a backup, mounted read-only at ~/<name> (`restore --as-folder`)."""

    name: Annotated[str, Strict(), AfterValidator(_restored_name)]


class ReleaseRef(BaseModel):
    """A release staged on the instance (``cloudjhub-worker stage-release``), by digest."""

    model_config = _CONFIG

    name: Annotated[str, Strict(), AfterValidator(_release_name)]
    sha256: Annotated[str, Strict(), AfterValidator(_sha256)]


class SharedFolder(BaseModel):
    """The shared course folder to mount at /srv/shared: read-write for staff, read-only
    for students, with the student's own writable dropbox when `dropbox` is set."""

    model_config = _CONFIG

    file_system_id: Annotated[str, Strict(), AfterValidator(_file_system_id)]
    region: Annotated[str, Strict(), AfterValidator(_region)]
    course: Annotated[str, Strict(), AfterValidator(_course)]
    staff: StrictBool = False
    dropbox: StrictBool = False


def check_course_name(name: str) -> str:
    """The one check of a course name (a folder of /srv/shared), for hub and agent."""
    return _course(name)


class StartRequest(_Message):
    """What ``cloudjhub-worker start`` reads on stdin: which server to run, and how."""

    user: Annotated[str, Strict(), AfterValidator(_user)]
    ip: Annotated[str, Strict(), AfterValidator(_ip)]
    port: Annotated[int, Strict(), Field(ge=1, le=65535)]
    # Carries the API token: never printed, logged or written to disk (nor in repr).
    env: Annotated[dict[EnvName, Text], Strict()] = Field(default_factory=dict, repr=False)
    cmd: Annotated[list[Text], Strict(), Field(min_length=1), AfterValidator(_program)]
    home_volume: HomeVolume | None = None
    restored_folder: RestoredFolder | None = None
    timeout: Annotated[float, Strict(), Field(gt=0, le=MAX_START_TIMEOUT, allow_inf_nan=False)] = (
        DEFAULT_START_TIMEOUT
    )
    # Self-stop after idle_timeout + self_stop_grace seconds; idle_timeout 0 disables it.
    idle_timeout: Seconds = 0
    self_stop_grace: Seconds = 0
    # Keep a still-running server (the instance was hibernated) instead of replacing it.
    resume: StrictBool = False
    # Staged releases to copy into the home before Jupyter starts, never overwriting.
    releases: Annotated[list[ReleaseRef], Strict(), Field(max_length=MAX_RELEASES)] = Field(
        default_factory=list
    )
    # The shared course folder to mount before Jupyter starts (None: the cluster has none).
    shared: SharedFolder | None = None

    def to_json(self) -> bytes:
        """The request as the hub sends it over the SSH channel."""
        return self.model_dump_json().encode()


class StartReply(_Message):
    """What ``start`` prints once the server accepts connections."""

    pid: StrictInt
    ip: StrictStr
    port: StrictInt
    # Only for a server kept across a hibernation: the token it already runs with,
    # which the hub adopts because the running server cannot take a new one.
    resumed: StrictBool = False
    api_token: StrictStr | None = Field(default=None, repr=False)
    # The home's use and size in bytes, as the agent found them before Jupyter started.
    home_used: StrictInt | None = None
    home_size: StrictInt | None = None

    def to_json(self) -> str:
        """One JSON line; a fresh server's reply has only pid, ip and port."""
        return json.dumps(self.model_dump(exclude_defaults=True))

    @classmethod
    def parse(cls, text: str) -> StartReply:
        """The agent's stdout as a reply; ProtocolError if it is not one."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:  # not JSON at all; bad fields raise in _one_line
            raise ProtocolError(problem(exc.errors()[0])) from None


# --------------------------------------------------------------------------- reading


def read_request(stream: IO[bytes]) -> StartRequest:
    """Read and validate the one request on stdin before anything is started."""
    return StartRequest.model_validate(read_object(stream))


def read_object(stream: IO[bytes], limit: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    """Read exactly one JSON object, without needing EOF (the SSH client may keep stdin open).

    At most ``limit`` bytes are read (one more tells a request too large), before any
    parsing of the rest: a huge request costs neither memory nor time.
    """
    decoder = json.JSONDecoder()
    data = b""
    while True:
        want = limit + 1 - len(data)
        chunk = stream.read1(want) if hasattr(stream, "read1") else stream.read(want)
        data += chunk
        if len(data) > limit:
            bad_request(f"request too large: more than {limit} bytes")
        text = _decode_prefix(data)
        if text is not None and text.strip():
            try:
                obj, _ = decoder.raw_decode(text.lstrip())
            except json.JSONDecodeError:
                obj = None  # incomplete so far, or bad: EOF tells which
            except RecursionError:
                bad_request("request is nested too deeply")
            except ValueError:  # an integer of more digits than Python converts
                bad_request("request has a number too large")
            else:
                if not isinstance(obj, dict):
                    bad_request("request must be a JSON object")
                return obj
        if not chunk:
            bad_request("expected one JSON object on stdin" if not data.strip() else "bad JSON")


def _decode_prefix(data: bytes) -> str | None:
    """Decode what arrived so far, tolerating a multi-byte character split across reads."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:
            return None
        bad_request("request is not valid UTF-8")
