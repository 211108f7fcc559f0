"""The user's account and home: created on first use, on the user's own volume if any.

In the emulator there are no accounts or mounts: a home is a directory under the
instance root, or, for a home volume, one that outlives the instance root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .paths import Layout
from .protocol import AgentError, HomeVolume, StartRequest, bad_request

# Accounts below this uid belong to the system; users get their own above it.
FIRST_USER_UID = 1000
RESERVED_USERS = frozenset({"root", "ubuntu", "admin", "ec2-user", "debian", "nobody"})
NITRO_EBS_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
DEVICE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class RunAs:
    """Where and as whom the server runs; uid None means "as the invoking user"."""

    home: Path
    uid: int | None = None
    gid: int | None = None


def prepare_home(layout: Layout, request: StartRequest) -> RunAs:
    """Make sure the user's home exists (and in real mode, the account and its volume)."""
    if layout.emulated:
        return RunAs(home=emulated_home(layout, request))
    account = ensure_account(request.user)
    home = Path(account.pw_dir)
    if request.home_volume is not None:
        mount_home_volume(request.home_volume, home, account.pw_uid, account.pw_gid)
    return RunAs(home=home, uid=account.pw_uid, gid=account.pw_gid)


def emulated_home(layout: Layout, request: StartRequest) -> Path:
    """An emulated EBS volume is a directory that outlives the instance root."""
    if request.home_volume is not None:
        home = layout.volumes_dir / request.home_volume.volume_id
    else:
        home = layout.emulated_home(request.user)
    home.mkdir(parents=True, exist_ok=True)
    return home


def run_checked(argv: Sequence[str], what: str) -> str:
    """Run a system tool; turn any failure into one readable error line."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
    except OSError as exc:
        raise AgentError(f"{what} failed: cannot run {argv[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        raise AgentError(f"{what} failed: {argv[0]} exited {proc.returncode}: {detail}")
    return proc.stdout


def ensure_account(user: str) -> pwd.struct_passwd:
    """Create the OS account on first use on this instance.

    An existing system account (root, the image's login user, daemons) is never
    handed to a hub user: a hub user called "root" must not get a root server."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        cmd = ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", user]
        cmd[1:1] = ["--key", f"UID_MIN={FIRST_USER_UID}"]
        run_checked(cmd, f"creating account {user}")
        account = pwd.getpwnam(user)
    login_user = os.environ.get("SUDO_USER")  # the image's login user, who runs us
    if account.pw_uid < FIRST_USER_UID or user in RESERVED_USERS or user == login_user:
        bad_request(f"user {user!r} is a system account on this instance; pick another name")
    return account


def device_candidates(volume: HomeVolume) -> list[Path]:
    """Nitro instances expose EBS volumes as NVMe devices named by volume id."""
    candidates = [
        Path("/dev/disk/by-id") / f"{NITRO_EBS_PREFIX}{volume.volume_id.replace('-', '')}"
    ]
    if volume.device:
        candidates.append(Path(volume.device))
        if volume.device.startswith("/dev/sd"):
            candidates.append(Path("/dev/xvd" + volume.device[len("/dev/sd") :]))
    return candidates


def wait_for_device(
    candidates: Sequence[Path],
    timeout: float = DEVICE_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """The attachment completes asynchronously; wait for the kernel to show the device."""
    deadline = clock() + timeout
    while True:
        for path in candidates:
            if path.exists():
                return path
        if clock() >= deadline:
            names = ", ".join(str(p) for p in candidates)
            raise AgentError(f"home volume device did not appear within {timeout:g}s: {names}")
        sleep(1.0)


def has_filesystem(device: Path) -> bool:
    """blkid exits 2 only when it finds nothing (no filesystem, no partition table)."""
    proc = subprocess.run(
        ["blkid", str(device)], capture_output=True, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode == 2:
        return False
    if proc.returncode != 0:
        raise AgentError(f"blkid {device} failed with status {proc.returncode}")
    return True


def mount_home_volume(volume: HomeVolume, home: Path, uid: int, gid: int) -> None:
    """Format a blank volume, mount it on the home and make it the user's."""
    device = wait_for_device(device_candidates(volume))
    if not has_filesystem(device):
        run_checked(["mkfs.ext4", "-q", str(device)], f"formatting {device}")
    home.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(home):
        run_checked(["mount", str(device), str(home)], f"mounting {device} on {home}")
    first_use = not any(entry.name != "lost+found" for entry in home.iterdir())
    if first_use and os.path.isdir("/etc/skel"):
        shutil.copytree("/etc/skel", home, symlinks=True, dirs_exist_ok=True)
    # uids can differ between instances, so re-own everything if the volume moved.
    if first_use or home.stat().st_uid != uid:
        chown_tree(home, uid, gid)
    home.chmod(0o700)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """Recursive chown that does not follow symlinks."""
    os.lchown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)
