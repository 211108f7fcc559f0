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

# AWS's recommended NFS options for EFS (EFS User Guide, "Mounting on Linux"); _netdev
# waits for the network at boot, nofail keeps a boot going if EFS is unreachable.
NFS_OPTIONS = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"


def fstab_line(config: ServerConfig, efs_utils: bool) -> str:
    fs_id = config.SHARED_FILE_SYSTEM_ID
    if efs_utils:
        return f"{fs_id}:/ {SHARED_MOUNT} efs _netdev,nofail,tls 0 0"
    host = f"{fs_id}.efs.{config.REGION}.amazonaws.com"
    return f"{host}:/ {SHARED_MOUNT} nfs4 {NFS_OPTIONS},_netdev,nofail 0 0"


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
    fstab = root / "etc" / "fstab"
    current = fstab.read_text() if fstab.exists() else ""
    line = fstab_line(config, shutil.which("mount.efs") is not None)
    if with_entry(current, line) != current:
        fstab.write_text(with_entry(current, line))
    mount_point = root / SHARED_MOUNT.lstrip("/")
    mount_point.mkdir(parents=True, exist_ok=True)
    if not mount_point.is_mount():
        subprocess.run(["mount", str(mount_point)], check=True, timeout=120)
