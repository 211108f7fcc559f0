"""The shared folder on the manager: mounted read-write at /srv/shared (an fstab
entry, so it comes back after a reboot) so that `cloudjhub release` run there copies
into it. The manager reaches the file system through the mount target in its own
zone (launch makes one in the public subnet when no workers' subnet is in that zone)
and its group is admitted by the file system's group.

Only on a real manager (root /): the local cloud's release writes the local cloud's
directory for the file system instead (shared_release.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..config import ServerConfig
from ..shared_folder import SHARED_MOUNT


class NoEfsUtils(RuntimeError):
    """The manager cannot mount the shared folder as its file system policy requires."""


def fstab_line(config: ServerConfig) -> str:
    """efs-utils' helper, over TLS and signed with the manager's role: the file
    system's policy (launch/iam_shared.py) refuses any other mount. _netdev waits for
    the network at boot, nofail keeps a boot going if EFS is unreachable."""
    return f"{config.SHARED_FILE_SYSTEM_ID}:/ {SHARED_MOUNT} efs _netdev,nofail,tls,iam 0 0"


def with_entry(fstab: str, line: str) -> str:
    """fstab with `line` as the one entry for /srv/shared (replacing an older one)."""
    kept = [
        entry
        for entry in fstab.splitlines()
        if not (len(entry.split()) > 1 and entry.split()[1] == SHARED_MOUNT)
    ]
    return "\n".join([*kept, line]) + "\n"


def mount_on_manager(root: Path, config: ServerConfig) -> None:
    if root != Path("/") or not config.SHARED_FILE_SYSTEM_ID:
        return
    if shutil.which("mount.efs") is None:
        raise NoEfsUtils(
            "the shared folder needs amazon-efs-utils on the manager (mount -t efs -o "
            "tls,iam: its file system policy admits only IAM-signed TLS mounts)"
        )
    fstab = root / "etc" / "fstab"
    current = fstab.read_text() if fstab.exists() else ""
    line = fstab_line(config)
    if with_entry(current, line) != current:
        fstab.write_text(with_entry(current, line))
    mount_point = root / SHARED_MOUNT.lstrip("/")
    mount_point.mkdir(parents=True, exist_ok=True)
    if not mount_point.is_mount():
        subprocess.run(["mount", str(mount_point)], check=True, timeout=120)
