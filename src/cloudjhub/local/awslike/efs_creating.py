"""EFS file systems and mount targets that take time to become `available`, as on
AWS (moto makes them available at once).

EFS API Reference, CreateFileSystem: the new file system's LifeCycleState is
`creating` and DescribeFileSystems shows when it is `available`; CreateMountTarget:
the call returns while the mount target is still `creating`, and DescribeMountTargets
reports its state. So a launcher must poll, which this makes it do: each is reported
`creating` for its first seconds (settings.py: EFS_*_SECONDS, scaled).

It patches moto in this process, so it works only with the embedded moto (and moto
in-process in tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
# What each kind stays `creating` for; none: moto's own behaviour.
_seconds: dict[str, float] = {}
_BORN = "_cloudjhub_made"


def install(file_system: float, mount_target: float) -> None:
    """From now on, new file systems and mount targets are `creating` for that long."""
    from moto.efs.models import FileSystem, MountTarget

    with _lock:
        _seconds.update(FileSystem=file_system, MountTarget=mount_target)
    for cls in (FileSystem, MountTarget):
        if getattr(cls.info_json, "_cloudjhub", False):
            continue
        cls.__init__ = _stamping(cls.__init__)  # type: ignore[method-assign]
        cls.info_json = _reporting(cls.info_json, cls.__name__)  # type: ignore[method-assign,assignment]


def uninstall() -> None:
    """Back to moto's behaviour (the patch stays, inert)."""
    with _lock:
        _seconds.clear()


def _stamping(init: Callable[..., None]) -> Callable[..., None]:
    def stamped(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        setattr(self, _BORN, time.monotonic())  # underscored: info_json leaves it out

    return stamped


def _reporting(info_json: Callable[[Any], dict[str, Any]], kind: str) -> Callable[[Any], Any]:
    def reported(self: Any) -> dict[str, Any]:
        out = info_json(self)
        with _lock:
            seconds = _seconds.get(kind)
        born = getattr(self, _BORN, None)
        creating = seconds is not None and born is not None and time.monotonic() - born < seconds
        if creating and out.get("LifeCycleState") == "available":
            out["LifeCycleState"] = "creating"
        return out

    reported._cloudjhub = True  # type: ignore[attr-defined]
    return reported
