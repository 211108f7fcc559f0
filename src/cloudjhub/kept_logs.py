"""The tails of workers' logs that the hub keeps: one small file per user's server.

A stopped instance cannot be asked for its log, and a failed spawn's message is
gone when the user tries again, so the spawner keeps the last lines of each in a
directory of the hub's own (beside the usage log), and `cloudjhub logs` and
`cloudjhub status USER` read them there. A file rather than the spawner's state
in the hub's database: the CLI on the manager reads it without a hub token or
the hub running, and it survives a lost database, like the host-key store.
Everything in a tail was written by a user's own server, so it is cut (lines,
their length) before it is kept, tokens in it redacted (Jupyter prints URLs with
`?token=`), and written atomically, mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import ConfigError, error_line, read_json

KEPT_LINES = 50
MAX_LINE_CHARS = 500
KEPT_LOGS_DIR = "kept-logs"  # beside the usage log, unless the trait says otherwise

Event = Literal["stop", "failed-spawn"]

# A secret's value goes, its name stays: `*token`, password, secret or api key set
# with `=` or `:` (quoted as in JSON, or URL-encoded as `%3D` inside a `next=`),
# OAuth's `code` and `state` query parameters, and Authorization headers.
_SECRET = re.compile(
    r"""(?ix)
    ( (?:[a-z_]*token|password|passwd|secret|api[_-]?key)["']?\s*(?:=|:|%3D)\s*["']?
    | [?&](?:code|state)=
    | authorization:\s*(?:token|bearer|basic)\s+
    )
    [^\s&"',;%]+
    """
)


class KeptTail(BaseModel):
    """What the hub kept of one server's log when it last stopped or failed to spawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str
    server: str = ""  # "" is the user's default server
    instance_id: str | None = None
    event: Event
    at: float
    lines: Annotated[
        list[Annotated[str, Field(max_length=MAX_LINE_CHARS + 6)]], Field(max_length=KEPT_LINES)
    ]

    def heading(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at))
        what = "stopped" if self.event == "stop" else "failed to spawn"
        where = f" on {self.instance_id}" if self.instance_id else ""
        return (
            f"last {len(self.lines)} line(s) the hub kept when the server {what}{where} at {when}:"
        )


def cut(lines: list[str]) -> list[str]:
    """The last KEPT_LINES lines, tokens redacted, each at most MAX_LINE_CHARS (marked
    when cut)."""
    kept = []
    for line in (redact(line) for line in lines[-KEPT_LINES:]):
        kept.append(line[:MAX_LINE_CHARS] + " [cut]" if len(line) > MAX_LINE_CHARS else line)
    return kept


def redact(line: str) -> str:
    return _SECRET.sub(r"\1[redacted]", line)


def default_dir(usage_log: str) -> str:
    """Where the tails go unless configured: beside the usage log, which the hub writes."""
    base = Path(usage_log) if usage_log else Path("/var/lib/cloudjhub/usage.jsonl")
    return str(base.with_name(KEPT_LOGS_DIR))


class KeptLogs:
    """A directory of kept tails; blocking, so the hub calls it through the executor."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, user: str, server: str = "") -> Path:
        """Names are the hub's (any characters): quoted, so no name leaves the directory."""
        # "~" separates the server and quote() leaves it as it is: encoded in names.
        name = quote(user, safe="").replace(".", "%2E").replace("~", "%7E")
        if server:
            name += "~" + quote(server, safe="").replace(".", "%2E").replace("~", "%7E")
        return self.directory / f"{name}.json"

    def keep(
        self, user: str, server: str, instance_id: str | None, event: Event, lines: list[str]
    ) -> KeptTail:
        tail = KeptTail(
            user=user,
            server=server,
            instance_id=instance_id,
            event=event,
            at=time.time(),
            lines=cut(lines),
        )
        target = self.path(user, server)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(tail.model_dump()) + "\n")
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tail

    def read(self, user: str, server: str = "") -> KeptTail | None:
        """The kept tail, None if there is none; a damaged file is a ConfigError naming it."""
        path = self.path(user, server)
        if not path.exists():
            return None
        data = read_json(path)
        try:
            return KeptTail.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(error_line(exc, path)) from exc
