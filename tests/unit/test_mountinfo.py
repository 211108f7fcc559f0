"""One reader of /proc/self/mountinfo for the agent and the local cloud."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cloudjhub.local import shared_dirs
from cloudjhub.worker import home_device, mountinfo, shared_mount

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs as root)")


def test_the_agent_and_the_local_cloud_read_mounts_with_the_same_code() -> None:
    assert shared_dirs.mounts_under is mountinfo.mounts_under
    assert shared_mount.mounts_under is mountinfo.mounts_under
    assert home_device.Mount is mountinfo.Mount


def test_every_octal_escape_and_non_ascii_names_come_back_as_written() -> None:
    line = "40 27 0:50 / /srv/a\\040b\\011c\\012d\\134e/caf\u00e9 rw,relatime - tmpfs x rw"
    (mount,) = mountinfo.parse(line + "\nshort line\n")
    assert mount.point == "/srv/a b\tc\nd\\e/caf\u00e9"
    assert (mount.devno, mount.options) == ("0:50", frozenset({"rw", "relatime"}))


@needs_root
def test_a_mount_whose_path_needs_escapes_is_found_and_kept_from_deletion(
    tmp_path: Path,
) -> None:
    root = tmp_path / "instances" / "i-1"
    point = root / "a b\\134 caf\u00e9"
    point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "t", str(point)], check=True)
    try:
        assert mountinfo.mounts_under(root) == [str(point)]
        assert shared_dirs.delete_unmounted(root) is False
    finally:
        subprocess.run(["umount", str(point)], check=True)
    assert shared_dirs.delete_unmounted(root) is True
