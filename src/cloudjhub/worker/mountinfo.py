"""The mounts the kernel lists in /proc/self/mountinfo, and undoing some. The one
reader of it: the agent finds devices and unmounts by it, and the local cloud (which
may import nothing else of the agent's) checks by it that no bind is left in a folder
it deletes."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# The kernel writes space, tab, newline and backslash in a path as \ooo (octal).
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line: which device (major:minor) is mounted where, with which options."""

    devno: str
    point: str
    options: frozenset[str]


def parse(text: str) -> list[Mount]:
    """Every line's mount, its mount point unescaped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        point = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        mounts.append(Mount(fields[2], point, frozenset(fields[5].split(","))))
    return mounts


def read_mounts(path: Path = MOUNTINFO) -> list[Mount]:
    """This mount namespace's mounts (none if it cannot be read)."""
    try:
        return parse(path.read_text())
    except OSError:
        return []


def mounts_under(top: Path) -> list[str]:
    """Mount points at or below `top`, in the order the kernel lists them."""
    root = os.path.abspath(top)
    points = [m.point for m in read_mounts()]
    return [p for p in points if p == root or p.startswith(root + "/")]


def unmount(points: list[str]) -> list[str]:
    """Unmount `points`, deepest first; a busy one is detached now (`umount -l`) and
    freed when its last user goes. The points, in the order done."""
    done = []
    for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
        proc = subprocess.run(["umount", point], capture_output=True, check=False)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        done.append(point)
    return done
