"""The shared course folder at /srv/shared: mounted before Jupyter starts, read-write
for staff (admins, TAs) and read-only for students, with a student's own dropbox
(/srv/shared/<course>/dropbox/<user>) bound read-write over the read-only tree, and
~/shared linking to it for Jupyter's file browser.

What keeps a student from writing is the mount itself (a read-only bind: EROFS even
for root), not file modes, so the tree is left writable to every staff account (uids
differ between instances). Students have no root on their instance (accounts.py: no
sudo, no other groups), so they cannot remount it.

On an instance the EFS file system is mounted once at a root-only staging point
(NFSv4.1 over TLS with amazon-efs-utils' mount helper, plain NFSv4.1 without it) and
bound from there. In the local cloud the "file system" is the local cloud's directory
for that id, bound the same way; that needs root, as mounts do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .accounts import RunAs
from .nfs_guard import ensure_nfs_guard
from .paths import Layout
from .protocol import AgentError, SharedFolder

# Mount options AWS recommends for EFS over NFS (EFS User Guide, "Mounting on Linux").
NFS_OPTIONS = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
MOUNT_TIMEOUT = 60.0


def mount_shared(
    layout: Layout, request_user: str, shared: SharedFolder | None, run_as: RunAs
) -> None:
    """Mount the shared folder as this request wants it (unmounting any earlier one)."""
    unmount_shared(layout)
    if shared is None:
        return
    if os.geteuid() != 0:
        raise AgentError(
            "the shared folder needs mounts, so the agent must run as root"
            + (
                " (the local cloud runs as root in CI; run the demo as root)"
                if layout.emulated
                else ""
            )
        )
    source = _source(layout, shared)
    course = source / shared.course
    for folder in (source, course):
        folder.mkdir(exist_ok=True)
        if shared.staff:
            folder.chmod(0o777)  # every staff account writes; students are held by the mount
    target = layout.shared_mount
    target.mkdir(parents=True, exist_ok=True)
    _bind(source, target, read_only=not shared.staff)
    if shared.dropbox and not shared.staff:
        box = course / "dropbox" / request_user
        box.parent.mkdir(exist_ok=True)
        box.mkdir(mode=0o700, exist_ok=True)
        if run_as.uid is not None:
            os.chown(box, run_as.uid, run_as.gid if run_as.gid is not None else -1)
        _own_dropbox_only(box, target / shared.course / "dropbox", request_user)
    _link_in_home(run_as, target)


def _own_dropbox_only(box: Path, dropboxes: Path, user: str) -> None:
    """Every student's instance runs them as the same uid, so file modes cannot keep
    one student out of another's dropbox: the dropboxes folder is covered by an
    empty read-only tmpfs holding only a mount point for the student's own, bound
    read-write (a student has no root on their instance to undo it)."""
    _run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "cloudjhub-dropbox", str(dropboxes)])
    try:
        (dropboxes / user).mkdir()
        _run(["mount", "-o", "remount,ro", str(dropboxes)])
        _bind(box, dropboxes / user, read_only=False)
    except BaseException:
        unmount_under(dropboxes)
        raise


def _link_in_home(run_as: RunAs, target: Path) -> None:
    """~/shared, so Jupyter's file browser (rooted at the home) shows the folder; a
    file of the user's by that name is left alone."""
    link = run_as.home / "shared"
    if os.path.lexists(link):
        return
    os.symlink(target, link)
    if run_as.uid is not None:
        os.lchown(link, run_as.uid, run_as.gid if run_as.gid is not None else -1)


def _source(layout: Layout, shared: SharedFolder) -> Path:
    if layout.emulated:
        found = layout.shared_dir / shared.file_system_id
        if not found.is_dir():
            raise AgentError(
                f"shared folder: the local cloud has no file system {shared.file_system_id}"
            )
        return found
    ensure_nfs_guard()  # before any mount: students must not reach EFS directly
    staging = layout.shared_staging
    if staging.is_mount():
        return staging
    staging.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging.mkdir(exist_ok=True)
    if shutil.which("mount.efs"):
        argv = ["mount", "-t", "efs", "-o", "tls", f"{shared.file_system_id}:/", str(staging)]
    else:
        host = f"{shared.file_system_id}.efs.{shared.region}.amazonaws.com"
        argv = ["mount", "-t", "nfs4", "-o", NFS_OPTIONS, f"{host}:/", str(staging)]
    _run(argv)
    return staging


def _bind(source: Path, target: Path, read_only: bool) -> None:
    _run(["mount", "--bind", str(source), str(target)])
    # Private: a dropbox bound below it must not propagate back to the source tree.
    _run(["mount", "--make-private", str(target)])
    if read_only:
        try:
            _run(["mount", "-o", "remount,bind,ro", str(target)])
        except AgentError:
            _run(["umount", str(target)])
            raise


def _run(argv: list[str]) -> None:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"shared folder: {' '.join(argv[:2])} failed: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no error output"])[-1][:300]
        raise AgentError(f"shared folder: {argv[0]} {argv[-1]} failed: {detail}")


def unmount_shared(layout: Layout) -> list[str]:
    """Unmount /srv/shared (and the dropbox under it); the mount points unmounted."""
    return unmount_under(layout.shared_mount)


def unmount_under(top: Path) -> list[str]:
    """Unmount everything mounted at or below `top`, deepest first (the local cloud
    calls this before it stops or deletes an instance root, so no bind outlives it)."""
    done = []
    for point in sorted(mounts_under(top), key=lambda p: p.count("/"), reverse=True):
        proc = subprocess.run(["umount", point], capture_output=True, check=False)
        if proc.returncode != 0:  # busy: detach now, free when the last user goes
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        done.append(point)
    return done


def mounts_under(top: Path) -> list[str]:
    root = os.path.abspath(top)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text
