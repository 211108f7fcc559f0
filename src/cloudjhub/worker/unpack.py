"""Unpack a release into a folder, never overwriting what is already there.

On an instance this runs as the user (``python -m cloudjhub.worker.unpack DEST``, the
tarball on stdin), so a symlink a student planted in their home leads nowhere they could
not write themselves. tarfile's ``data`` filter refuses absolute paths, ``..``, links
leaving the folder and device files, and drops setuid bits.
"""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path
from typing import IO


class ReleaseError(Exception):
    """The tarball is not a release we unpack; one line."""


def _checked(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The member if the data filter keeps its path as it is; the filter would only
    strip a leading / where we refuse the whole tarball."""
    if os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    filtered = tarfile.data_filter(member, "/release")
    if filtered.name != member.name:
        raise tarfile.OutsideDestinationError(member, member.name)
    return member


def check_members(stream: IO[bytes]) -> int:
    """Raise ReleaseError unless every member passes the data filter; the member count."""
    count = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                _checked(member)
                count += 1
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ReleaseError(f"not a release tarball: {exc}") from None
    return count


def unpack_missing(stream: IO[bytes], dest: Path) -> list[str]:
    """Extract into dest each member whose path does not exist yet; the paths written."""
    dest.mkdir(exist_ok=True)
    written: list[str] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                target = dest / _checked(member).name
                if os.path.lexists(target):
                    continue  # the student's own file (or folder) wins
                tar.extract(member, dest, filter="data")
                written.append(member.name)
    except (tarfile.TarError, EOFError) as exc:
        raise ReleaseError(f"cannot unpack the release: {exc}") from None
    return written


def main(argv: list[str]) -> int:
    """As the user: unpack stdin into argv[0]; one line on stderr on failure."""
    try:
        unpack_missing(sys.stdin.buffer, Path(argv[0]))
    except (ReleaseError, OSError) as exc:
        print(f"release not delivered: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
