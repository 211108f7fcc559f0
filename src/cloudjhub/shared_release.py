"""`cloudjhub release` into the shared course folder: the checked folder copied to
<shared folder>/<NAME> where the release runs (the manager, which mounts the EFS; the
local cloud's directory for it), files readable by everyone, nothing followed.

Staff can write the shared folder, so a symlink they left in it must not steer a
copy made as root: every directory is opened relative to its parent with O_NOFOLLOW
and every file is written beside its final name and renamed over it. A file of the
release replaces the one of the same name there (the shared folder holds staff's
copies, no student's work); other files are left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from .config import ServerConfig
from .shared_folder import SHARED_MOUNT

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class SharedReleaseError(Exception):
    """The release could not be written; the message names the path and why."""


def shared_root(config: ServerConfig, config_file: Path, given: Path | None) -> Path:
    """Where the shared folder is on this machine: --shared-folder; else, beside a
    local cloud's server_config.json, its EFS directory for the file system; else
    /srv/shared (the manager's mount)."""
    if given is not None:
        return given
    local = config_file.resolve().parent / "efs" / config.SHARED_FILE_SYSTEM_ID
    return local if local.is_dir() else Path(SHARED_MOUNT)


def copy_release(folder: Path, files: list[Path], root: Path, name: str) -> Path:
    """Copy `files` (checked by releases.source_files) into root/name."""
    try:
        root_fd = os.open(root, DIR_FLAGS)
    except OSError as exc:
        raise SharedReleaseError(
            f"the shared folder {root} is not here ({exc.strerror}); run this where it is "
            "mounted (the manager), or pass --shared-folder"
        ) from None
    try:
        top = _subdir(root_fd, name, root / name)
        try:
            for rel in files:
                _copy_one(folder / rel, top, rel, root / name)
        finally:
            os.close(top)
    finally:
        os.close(root_fd)
    return root / name


def _copy_one(source: Path, top: int, rel: Path, shown: Path) -> None:
    parent = top
    opened = []
    try:
        for part in rel.parts[:-1]:
            parent = _subdir(parent, part, shown / rel)
            opened.append(parent)
        last = rel.parts[-1]
        mode = source.lstat().st_mode
        if stat.S_ISDIR(mode):
            os.close(_subdir(parent, last, shown / rel))
        elif stat.S_ISLNK(mode):
            tmp = f".{last}.release-tmp"
            _unlink_quiet(tmp, parent)
            os.symlink(os.readlink(source), tmp, dir_fd=parent)
            os.replace(tmp, last, src_dir_fd=parent, dst_dir_fd=parent)
        else:
            _write_file(source, parent, last)
    except OSError as exc:
        raise SharedReleaseError(f"{shown / rel}: {exc.strerror or exc}") from None
    finally:
        for fd in opened:
            os.close(fd)


def _subdir(parent: int, name: str, shown: Path) -> int:
    """The folder `name` opened without following a symlink; made 0755 when the
    release creates it (an existing one keeps the mode staff gave it)."""
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
        made = True
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise SharedReleaseError(
            f"{shown}: {name} in the shared folder is not a plain folder ({exc.strerror}); refused"
        ) from None
    if made:
        os.fchmod(fd, 0o755)  # whatever the umask
    return fd


def _write_file(source: Path, parent: int, last: str) -> None:
    tmp = f".{last}.release-tmp"
    _unlink_quiet(tmp, parent)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent)
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        shutil.copyfileobj(src, out)
        os.fchmod(out.fileno(), 0o644)
    os.replace(tmp, last, src_dir_fd=parent, dst_dir_fd=parent)


def _unlink_quiet(name: str, parent: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=parent)
