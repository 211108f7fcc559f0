"""The user's account and home: created on first use, on the user's own volume if any.

The agent hands out only accounts it created. It marks each one with a record file
under its state dir (root-only, /var/lib/cloudjhub/accounts/<name>, holding the uid)
rather than a GECOS comment, which a user can change with chfn. An account of the
user's name that the image already has (ssm-user, lxd, daemon) is never used: the user
gets protocol.mapped_account's name instead. An account has no group but its own.

In the emulator there are no accounts or mounts: a home is a directory under the
instance root, or, for a home volume, one that outlives the instance root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import home_grow, home_space
from .home_device import (
    SystemPaths,
    device_candidates,
    mounted_on,
    verify_device,
    wait_for_device,
)
from .paths import Layout, write_private
from .protocol import (
    RESERVED_ACCOUNTS,
    AgentError,
    HomeVolume,
    StartRequest,
    bad_request,
    mapped_account,
)

# Accounts below this uid belong to the system; users get their own above it.
FIRST_USER_UID = 1000
MOUNT_OPTIONS = ("nosuid", "nodev")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_tool(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@dataclass(frozen=True)
class System:
    """The system tools and tables the agent acts through; tests inject their own."""

    run: Runner = run_tool
    lookup: Callable[[str], pwd.struct_passwd | None] = _lookup
    groups: Callable[[str, int], list[int]] = os.getgrouplist
    paths: SystemPaths = field(default_factory=SystemPaths)


@dataclass(frozen=True)
class RunAs:
    """Where and as whom the server runs; uid None means "as the invoking user"."""

    home: Path
    name: str
    uid: int | None = None
    gid: int | None = None


def prepare_home(layout: Layout, request: StartRequest, system: System = System()) -> RunAs:
    """Make sure the user's home exists (and in real mode, the account and its volume)."""
    if layout.emulated:
        if request.home_volume is not None:
            home_space.fill_from_snapshot(
                layout, request.home_volume, layout.volumes_dir / request.home_volume.volume_id
            )
        home = emulated_home(layout, request)
        volume = request.home_volume
        if volume is not None and home_space.needs_grow(layout.volumes_dir, volume):
            home_space.record_grow(layout.volumes_dir, volume)
        return RunAs(home=home, name=request.user)
    account = ensure_account(request.user, layout.accounts_dir, system)
    home = Path(account.pw_dir)
    if request.home_volume is not None:
        mount_home_volume(
            request.home_volume,
            home,
            account.pw_uid,
            account.pw_gid,
            system,
        )
    return RunAs(home=home, name=account.pw_name, uid=account.pw_uid, gid=account.pw_gid)


def emulated_home(layout: Layout, request: StartRequest) -> Path:
    """An emulated EBS volume is a directory that outlives the instance root."""
    if request.home_volume is not None:
        home = layout.volumes_dir / request.home_volume.volume_id
    else:
        home = layout.emulated_home(request.user)
    home.mkdir(parents=True, exist_ok=True)
    return home


def run_checked(argv: Sequence[str], what: str, run: Runner = run_tool) -> str:
    """Run a system tool; turn any failure into one readable error line."""
    try:
        proc = run(argv)
    except OSError as exc:
        raise AgentError(f"{what} failed: cannot run {argv[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no error output"])[-1][:200]
        raise AgentError(f"{what} failed: {argv[0]} exited {proc.returncode}: {detail}")
    return proc.stdout


# --------------------------------------------------------------------------- accounts


def ensure_account(user: str, accounts_dir: Path, system: System = System()) -> pwd.struct_passwd:
    """The agent's own account for ``user``: created on first use, never someone else's."""
    for name in (user, mapped_account(user)):
        account = system.lookup(name)
        if account is None:
            account = create_account(name, accounts_dir, system)
        elif not is_ours(account, accounts_dir):
            continue  # the image's account (or a daemon's): try the mapped name
        only_own_group(account, system)
        return account
    bad_request(
        f"user {user!r}: accounts {user} and {mapped_account(user)} exist on this "
        "instance and were not made by cloudjhub"
    )


def is_ours(account: pwd.struct_passwd, accounts_dir: Path) -> bool:
    """Made by the agent: its record names this very uid, and it is a plain user's."""
    if account.pw_uid < FIRST_USER_UID or account.pw_name in RESERVED_ACCOUNTS:
        return False
    if account.pw_name == os.environ.get("SUDO_USER"):  # the image's login user, who runs us
        return False
    try:
        recorded = (accounts_dir / account.pw_name).read_text().strip()
    except OSError:
        return False
    return recorded == str(account.pw_uid)


def create_account(name: str, accounts_dir: Path, system: System) -> pwd.struct_passwd:
    """useradd with a group of its own and no other (no -G), above the system uids."""
    argv = ["useradd", "--key", f"UID_MIN={FIRST_USER_UID}", "--create-home"]
    argv += ["--shell", "/bin/bash", "--user-group", "--comment", "cloudjhub", name]
    run_checked(argv, f"creating account {name}", system.run)
    account = system.lookup(name)
    if account is None or account.pw_uid < FIRST_USER_UID:
        raise AgentError(f"creating account {name} failed: no user account after useradd")
    write_private(accounts_dir / name, f"{account.pw_uid}\n")
    return account


def only_own_group(account: pwd.struct_passwd, system: System) -> None:
    """Strip supplementary groups an image's useradd defaults (or cloud-init) added."""
    if set(system.groups(account.pw_name, account.pw_gid)) == {account.pw_gid}:
        return
    name = account.pw_name
    run_checked(["usermod", "-G", "", name], f"removing the extra groups of {name}", system.run)
    if set(system.groups(name, account.pw_gid)) != {account.pw_gid}:
        raise AgentError(f"account {name} still has groups beyond its own")


# --------------------------------------------------------------------------- home volume


def has_filesystem(device: Path, run: Runner = run_tool) -> bool:
    """blkid -p (probing the device, no cache) exits 2 only when it finds nothing."""
    try:
        proc = run(["blkid", "-p", str(device)])
    except OSError as exc:
        raise AgentError(f"cannot run blkid: {exc.strerror}") from exc
    if proc.returncode == 2:
        return False
    if proc.returncode != 0:
        raise AgentError(f"blkid {device} failed with status {proc.returncode}")
    return True


def mount_home_volume(
    volume: HomeVolume,
    home: Path,
    uid: int,
    gid: int,
    system: System = System(),
) -> None:
    """Format a blank volume, mount it on the home and make it the user's."""
    found = wait_for_device(device_candidates(volume, system.paths))
    device = verify_device(volume, found, home, system.paths)
    current = mounted_on(home, system.paths)
    options = ",".join(MOUNT_OPTIONS)
    if current is None:
        if not has_filesystem(device.path, system.run):
            run_checked(["mkfs.ext4", "-q", str(device.path)], f"formatting {found}", system.run)
        home.mkdir(parents=True, exist_ok=True)
        argv = ["mount", "-t", "ext4", "-o", options, str(device.path), str(home)]
        run_checked(argv, f"mounting {found} on {home}", system.run)
    elif current.devno != device.devno:
        bad_request(f"{home} already has another file system mounted on it")
    elif not set(MOUNT_OPTIONS) <= current.options:
        argv = ["mount", "-o", f"remount,{options}", str(home)]
        run_checked(argv, f"remounting {home}", system.run)
    # A volume grown with ModifyVolume (`cloudjhub resize-home`): ext4 grows online.
    if home_grow.needs_grow(device, system.paths, system.run):
        argv = ["resize2fs", str(device.path)]
        run_checked(argv, f"growing the file system on {found}", system.run)
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
