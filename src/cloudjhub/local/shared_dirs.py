"""The local cloud's EFS: moto's EFS API makes the file system (as `launch
--shared-storage efs` would), and the local cloud keeps a directory per file system
id (STATE_DIR/efs/<fs-id>) that emulated workers bind-mount at /srv/shared."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..aws.admin import AdminEc2
from ..aws.shared_storage import SharedStorage
from ..worker.mountinfo import mounts_under

log = logging.getLogger(__name__)
# As long as the launcher waits: --like-aws keeps a mount target `creating` a minute.
EFS_TIMEOUT = 600.0


def shared_dir(state_dir: Path, fs_id: str) -> Path:
    return state_dir / "efs" / fs_id


def ensure_local_shared(
    ec2: AdminEc2,
    vpc_id: str,
    subnet: str,
    worker_group: str,
    state_dir: Path,
    say: Callable[[str], None] | None = None,
) -> str:
    """The file system, its group and mount target (through EFS's API), and its
    directory; under --like-aws EFS takes its time, as the launcher's waits allow."""
    storage = SharedStorage(ec2, _efs_client(ec2), timeout=EFS_TIMEOUT, poll=0.2, say=say)
    fs_id, _ = storage.ensure_file_system()
    group, _ = storage.ensure_group(vpc_id, [worker_group])
    zone = str(ec2.subnets([subnet])[subnet].get("AvailabilityZone"))
    storage.ensure_mount_targets(fs_id, {subnet: zone}, group)
    folder = shared_dir(state_dir, fs_id)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    folder.parent.chmod(0o755)
    return fs_id


def _efs_client(ec2: AdminEc2) -> object:
    from ..aws.client import boto_client

    meta = ec2.client.meta
    return boto_client("efs", meta.region_name, meta.endpoint_url)


def unmount_instance(root: Path) -> None:
    """Unmount the shared folder under an instance root, as the machine's own agent
    does on a stop (`cloudjhub-worker unmount-shared`): before the emulator stops a
    machine or deletes its root, so no bind outlives it (or deletes shared files)."""
    if not (root / "srv" / "shared").exists():
        return
    env = {**os.environ, "CLOUDJHUB_WORKER_ROOT": str(root)}
    subprocess.run(
        [sys.executable, "-m", "cloudjhub.worker.cli", "unmount-shared"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def unmount_instances(state_dir: Path) -> None:
    """Every instance root's shared folder (a demo that died may have left binds)."""
    instances = state_dir / "instances"
    for root in sorted(instances.iterdir()) if instances.is_dir() else []:
        unmount_instance(root)


def delete_unmounted(top: Path) -> bool:
    """Delete `top` (its instances' shared folders unmounted first); if anything is
    still mounted there, delete nothing (a read-write bind of the shared folder would
    take the local cloud's EFS directory with it) and say so. True if deleted."""
    left = mounts_under(top)
    if left:
        log.warning("not deleting %s: still mounted there: %s", top, ", ".join(left))
        return False
    shutil.rmtree(top, ignore_errors=True)
    return True
