"""Releases on the manager: a folder an admin hands out, kept as a tarball for the hub.

`cloudjhub release` checks the folder and writes ``<dir>/<name>.tar.gz`` with a
``<name>.sha256`` beside it (written last, so the hub never reads half a release); the
spawner sends each to the worker agent, which copies it into the user's home at their
next start without overwriting anything.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .worker.protocol import SHA256_RE, check_release_name

RELEASES_DIR = "/var/lib/cloudjhub/releases"


class SourceError(Exception):
    """The folder cannot be released; the message names the path and why."""


@dataclass(frozen=True)
class Release:
    name: str
    tarball: Path
    sha256: str


def release_name(name: str) -> str:
    """The name, or ValueError: it becomes ~/<name> on every worker."""
    return check_release_name(name)


def source_files(folder: Path) -> list[Path]:
    """Every path in the folder, relative; SourceError for one escaping it or not a file.

    A symlink is kept only when it points inside the folder (it is released as a link);
    devices, sockets and FIFOs are refused.
    """
    top = folder.resolve()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = (path.parent / os.readlink(path)).resolve()
                if os.path.isabs(os.readlink(path)) or not target.is_relative_to(top):
                    raise SourceError(f"{path}: a symlink leading out of the folder")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise SourceError(f"{path}: not a regular file or folder")
            found.append(rel)
    return found


def build_tarball(folder: Path, files: list[Path]) -> bytes:
    """A gzip tar of the files, owned by nobody in particular (the agent re-owns)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel in files:
            info = tar.gettarinfo(str(folder / rel), arcname=str(rel))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(folder / rel, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def publish(folder: Path, name: str, directory: Path) -> Release:
    """Write the release atomically into `directory`, replacing one of the same name."""
    data = build_tarball(folder, source_files(folder))
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    tarball = directory / f"{name}.tar.gz"
    _write_atomic(tarball, data)
    _write_atomic(directory / f"{name}.sha256", f"{digest}\n".encode())
    return Release(name, tarball, digest)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def published(directory: Path) -> list[Release]:
    """The releases in `directory`, by name; a damaged or half-written one is skipped."""
    found: list[Release] = []
    if not directory.is_dir():
        return found
    for sidecar in sorted(directory.glob("*.sha256")):
        name = sidecar.name.removesuffix(".sha256")
        try:
            release_name(name)
            digest = sidecar.read_text().strip()
        except (ValueError, OSError):
            continue
        tarball = directory / f"{name}.tar.gz"
        if SHA256_RE.fullmatch(digest) and tarball.is_file():
            found.append(Release(name, tarball, digest))
    return found
