"""Restored folders unmounted before the instance hibernates.

A restored folder (~/restored-<date>, home_space.restore_folder) lasts one session:
the next start detaches and deletes its volume (home_restore.drop_restored_folders).
A hibernated instance keeps its mounts through the stop and the resume, so that
detach met a volume still mounted, and EC2 does not finish detaching a volume the
OS still uses (EBS User Guide, "Detach an Amazon EBS volume": unmount it first, or
the volume can get stuck in the `busy` state): the start stalled for a minute, then
left it. So the hub asks the agent to unmount them before it hibernates the instance.
"""

from __future__ import annotations

import os

from .contract import RESTORED_RE
from .mountinfo import Mount, read_mounts, unmount
from .paths import Layout


def unmount_restored(layout: Layout) -> list[str]:
    """Every ~/restored-<date> under the homes, and anything else mounted from its
    device (never a device the system or a home is on); the points unmounted."""
    homes = os.path.abspath(layout.root / "home")
    mounts = read_mounts()
    devices = {m.devno for m in mounts if _is_restored(m, homes)}
    devices -= {m.devno for m in mounts if not _below(m.point, homes) or _is_home(m, homes)}
    return unmount([m.point for m in mounts if m.devno in devices])


def _below(point: str, top: str) -> bool:
    return point.startswith(top + "/")


def _is_home(mount: Mount, homes: str) -> bool:
    return os.path.dirname(mount.point) == homes


def _is_restored(mount: Mount, homes: str) -> bool:
    home = os.path.dirname(mount.point)
    return os.path.dirname(home) == homes and bool(RESTORED_RE.match(os.path.basename(mount.point)))
