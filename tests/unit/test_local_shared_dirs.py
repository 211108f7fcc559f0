"""The local cloud never deletes an instance root through a mount still in it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cloudjhub.local.shared_dirs import delete_unmounted, mounts_under

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs as root)")


@needs_root
def test_an_instance_root_with_a_bind_left_in_it_is_not_deleted(tmp_path: Path) -> None:
    efs = tmp_path / "efs" / "fs-0123456789abcdef0"
    efs.mkdir(parents=True)
    (efs / "notes.md").write_text("keep me")
    root = tmp_path / "instances" / "i-1"
    (root / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(efs), str(root / "mnt")], check=True)
    try:
        assert delete_unmounted(root) is False
        assert (efs / "notes.md").read_text() == "keep me"
        assert root.exists()
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=True)
    assert mounts_under(root) == []
    assert delete_unmounted(root) is True and not root.exists()
    assert (efs / "notes.md").read_text() == "keep me"


def test_the_emulator_deletes_instance_roots_only_through_the_check() -> None:
    """Its terminated-instance sweep (and the demo's restart) go through delete_unmounted."""
    src = Path(__file__).parents[2] / "src" / "cloudjhub" / "local"
    for name in ("emulator.py", "demo.py"):
        text = (src / name).read_text()
        assert "delete_unmounted(" in text, name
        assert "shutil.rmtree(root, ignore" not in text and "shutil.rmtree(path)" not in text
