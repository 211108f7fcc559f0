"""The user's home before Jupyter starts: grown to its volume's size, a restored folder
beside it, and how full it is.

A full home makes Jupyter die with a traceback about a checkpoint or a socket; the
agent says so first, in words for the user (EXIT_HOME_FULL), and reports the usage
on every start, so the hub can warn before it comes to that and `cloudjhub status`
can show it.

In the emulated local cloud a volume is a directory: its size is what EBS says
(the request's size_gb), its use the bytes of its files, a grow is recorded in
`<volumes>/<volume id>.grown`, and a snapshot is a copy under `<volumes>/../snapshots`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from .home_device import device_candidates, mounted_on, verify_device, wait_for_device
from .paths import Layout
from .protocol import EXIT_HOME_FULL, AgentError, HomeVolume, RestoredFolder

GB = 1 << 30
# Below this Jupyter cannot even write a checkpoint or its runtime files.
FULL_FREE_BYTES = 16 << 20
# Restored volumes: read-only, and nothing on them runs or elevates.
RESTORED_OPTIONS = ("ro", "noload", "nosuid", "nodev", "noexec")


@dataclass(frozen=True)
class Usage:
    used: int
    size: int

    @property
    def full(self) -> bool:
        return self.size - self.used < FULL_FREE_BYTES

    def message(self) -> str:
        return (
            f"Your home folder is full ({self.used / GB:.1f} of {self.size / GB:.1f} GB used). "
            "Ask your admin to delete files for you or to grow it (cloudjhub resize-home)."
        )


def tree_bytes(top: Path) -> int:
    """The bytes of the regular files under `top`, links not followed."""
    total = 0
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def usage(layout: Layout, home: Path, volume: HomeVolume | None) -> Usage | None:
    """None for an emulated home without a volume size: it is a directory on this
    machine's disk, whose size says nothing about the home."""
    if layout.emulated:
        if volume is None or not volume.size_gb:
            return None
        return Usage(tree_bytes(home), volume.size_gb * GB)
    fs = os.statvfs(home)
    size = fs.f_blocks * fs.f_frsize
    return Usage(size - fs.f_bavail * fs.f_frsize, size)


def check_space(layout: Layout, home: Path, volume: HomeVolume | None) -> Usage | None:
    """The home's usage; AgentError(EXIT_HOME_FULL) when it is full."""
    found = usage(layout, home, volume)
    if found is not None and found.full:
        raise AgentError(found.message(), EXIT_HOME_FULL)
    return found


def needs_grow(marks: Path, volume: HomeVolume) -> bool:
    """Emulated: whether the volume's size differs from the one its "file system" was
    last grown to (a real one compares the device with ext4: `home_grow`)."""
    if not volume.size_gb:
        return False
    mark = marks / f"{volume.volume_id}.grown"
    return not mark.exists() or mark.read_text().strip() != str(volume.size_gb)


def record_grow(marks: Path, volume: HomeVolume) -> None:
    """The size the file system was grown to (emulated: all the grow there is)."""
    marks.mkdir(mode=0o700, parents=True, exist_ok=True)
    (marks / f"{volume.volume_id}.grown").write_text(f"{volume.size_gb}\n")


def snapshots_dir(layout: Layout) -> Path:
    return layout.volumes_dir.parent / "snapshots"


def fill_from_snapshot(layout: Layout, volume: HomeVolume, target: Path) -> None:
    """Emulated: a volume made from a snapshot starts with the snapshot's files."""
    if volume.from_snapshot is None or target.exists():
        return
    source = snapshots_dir(layout) / volume.from_snapshot
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)


def _plain_folder(target: Path) -> None:
    """~/<name> is in the user's own home: a symlink they planted there must never
    make root copy or mount onto its target (say /etc/profile.d)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(target, 0o755)
    if not stat.S_ISDIR(os.lstat(target).st_mode):
        raise AgentError(
            f"~/{target.name} is not a plain folder; move it away to get the restored files"
        )


def restore_folder(layout: Layout, home: Path, folder: RestoredFolder) -> Path:
    """Put the restored volume at ~/<name>, read-only."""
    target = home / folder.name
    if layout.emulated:
        staged = layout.volumes_dir / folder.volume_id
        fill_from_snapshot(layout, folder, staged)
        if staged.is_dir() and not os.path.lexists(target):
            _plain_folder(target)
            shutil.copytree(staged, target, symlinks=True, dirs_exist_ok=True)
            _read_only(target)
        elif os.path.lexists(target):
            _plain_folder(target)
        return target
    from .accounts import run_checked

    _plain_folder(target)
    if mounted_on(target) is not None:
        return target
    found = wait_for_device(device_candidates(folder))
    device = verify_device(folder, found, target)
    # Mounted through a descriptor opened without following links, so swapping the
    # folder for a symlink after the check changes nothing (--no-canonicalize keeps
    # mount(8) from resolving the path itself).
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY)
    try:
        options = ",".join(RESTORED_OPTIONS)
        pinned = f"/proc/{os.getpid()}/fd/{fd}"
        argv = ["mount", "--no-canonicalize", "-t", "ext4", "-o", options, str(device.path), pinned]
        run_checked(argv, f"mounting the restored {found} on {target}")
    finally:
        os.close(fd)
    return target


def _read_only(top: Path) -> None:
    for dirpath, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o400)
        for name in dirs:
            os.chmod(os.path.join(dirpath, name), 0o500)
    os.chmod(top, 0o500)
