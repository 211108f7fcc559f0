"""The hub's host-key store: each instance's pinned SSH host keys, in a file of its own.

Pins live here rather than only in JupyterHub's database because the console
shows the keys once per instance (cloud-init's keys-to-console): a lost
database or a stop/start must not lock a user out. Keys are kept per instance
id, never per IP, since AWS hands a terminated instance's address to the next
launch. A pin is never replaced: a different key for a pinned id is refused
at connect. Writes are atomic (tmp + rename, 0600 in a 0700 directory) and
serialised by one lock per file in the process; the file is read when needed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import ConfigError, error_line, read_json

HOST_KEY_STORE = "/var/lib/cloudjhub/host_keys.json"
# An entry whose instance a full listing no longer shows is dropped only after this
# long: DescribeInstances can lag a launch, and AWS lists terminated instances for
# about an hour before forgetting them.
UNLISTED_GRACE = 3600.0

InstanceId = Annotated[str, Field(pattern=r"^i-[0-9a-f]{8,17}$")]
# "type base64", as parse_console_host_keys and read_known_hosts give them.
KeyLine = Annotated[str, Field(pattern=r"^[a-z0-9@.-]{1,64} [A-Za-z0-9+/]+={0,3}$")]
HostKeys = Annotated[list[KeyLine], Field(min_length=1, max_length=16)]


class Pin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: HostKeys
    pinned_at: float = 0.0


class StoreFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    instances: dict[InstanceId, Pin] = Field(default_factory=dict)


def valid_keys(keys: Iterable[str]) -> list[str] | None:
    """The keys if they are well-formed host-key lines, else None (for other records,
    such as the launcher's, that carry pins)."""
    try:
        return list(Pin(keys=list(keys)).keys)
    except ValidationError:
        return None


class HostKeyStore:
    """One file of pins; blocking, so the hub calls it through the executor."""

    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _locks_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with self._locks_guard:
            self._lock = self._locks.setdefault(str(self.path.absolute()), threading.Lock())

    def _read(self) -> StoreFile:
        if not self.path.exists():
            return StoreFile()
        data = read_json(self.path)  # a ConfigError naming the file, whatever is wrong
        try:
            return StoreFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(error_line(exc, self.path)) from exc

    def _write(self, store: StoreFile) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(store.model_dump(), indent=1, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def keys_for(self, instance_id: str) -> list[str]:
        """The keys pinned for this instance; [] if none yet."""
        with self._lock:
            pin = self._read().instances.get(instance_id)
        return list(pin.keys) if pin else []

    def pin(
        self,
        instance_id: str,
        keys: list[str],
        gone: Collection[str] = (),
        listed: Collection[str] | None = None,
    ) -> list[str]:
        """Pin `keys` for the instance unless it has a pin already; return the pin in force.

        On the way, drop the pins of instances EC2 reports `gone`, and (given a full
        `listed` set of the cluster's instances) of those it stopped listing long ago.
        """
        now = time.time()
        with self._lock:
            store = self._read()
            pins = dict(store.instances)
            for old in gone:
                if old != instance_id:
                    pins.pop(old, None)
            if listed is not None:
                pins = {
                    i: p
                    for i, p in pins.items()
                    if i in listed or i == instance_id or now - p.pinned_at < UNLISTED_GRACE
                }
            kept = pins.get(instance_id)
            if kept is None:
                kept = pins[instance_id] = Pin(keys=keys, pinned_at=now)
            if pins != store.instances:
                self._write(StoreFile(instances=pins))
        return list(kept.keys)
