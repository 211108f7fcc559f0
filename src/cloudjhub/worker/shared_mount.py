"""The shared course folder at /srv/shared: mounted before Jupyter starts, read-write
for staff (admins, TAs) and read-only for students, with a student's own dropbox
(/srv/shared/<course>/dropbox/<user>) bound read-write over the read-only tree, and
~/shared linking to it for Jupyter's file browser. For a student, every course's
dropbox folder is masked, not only the current course's: all students run as the
same uid, so the mounts are all that keeps their files apart. The whole view (bind, dropbox
mask, own dropbox) is built under a root-only folder and then moved to /srv/shared in
one `mount --move`, so /srv/shared never shows the unmasked dropboxes, not even for
a moment to a student's processes already running.

What keeps a student from writing is the mount itself (a read-only bind: EROFS even
for root), not file modes. Students have no root on their instance (accounts.py: no
sudo, no other groups), so they cannot remount it. Staff can write the tree, so the
agent, as root, never follows a symlink on its way to a dropbox (each folder opened
relative to its parent with O_NOFOLLOW, mounts given /proc/self/fd paths).

On an instance the EFS file system is mounted once at a root-only staging point
(amazon-efs-utils' mount helper, over TLS and signed with the instance's role: the
file system's policy admits nothing else) and bound from there. In the local cloud the "file system" is the local cloud's directory
for that id, bound the same way; that needs root, as mounts do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from .contract import AgentError
from .mountinfo import mounts_under, unmount
from .paths import Layout

if TYPE_CHECKING:  # types only: `stop` and `unmount-shared` import no pydantic for them
    from .accounts import RunAs
    from .protocol import SharedFolder

MOUNT_TIMEOUT = 60.0
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# root:<staff's group>, group-writable, setgid, sticky (see _staff_writable).
STAFF_MODE = 0o3775


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
    target = layout.shared_mount
    target.mkdir(parents=True, exist_ok=True)
    view = _private_view(layout)
    try:
        _build_view(view, source, request_user, shared, run_as)
        _run(["mount", "--no-canonicalize", "--move", str(view), str(target)])
    except BaseException:
        unmount_under(view)
        raise
    finally:
        unmount_under(view.parent)
    _link_in_home(run_as, target)


def _private_view(layout: Layout) -> Path:
    """The empty mount point the view is built at. Its parent is root-only (no
    student process can look in while the dropboxes are still unmasked there) and,
    for the time of the build, a private bind of itself: `mount --move` refuses to
    move a mount whose parent mount is shared (systemd makes / shared)."""
    view = layout.shared_view
    view.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(view.parent, 0o700)
    view.mkdir(exist_ok=True)
    parent = str(view.parent)
    _run(["mount", "--no-canonicalize", "--bind", parent, parent])
    _run(["mount", "--no-canonicalize", "--make-private", parent])
    return view


def _build_view(
    view: Path, source: Path, request_user: str, shared: SharedFolder, run_as: RunAs
) -> None:
    """The whole view at `view`: the tree bound (read-only for students), and for a
    student, every course's dropboxes masked, with only their own box (when this
    course has dropboxes) in the current course's mask."""
    top = _open_dir(None, str(source), str(source))
    try:
        course = _open_dir(top, shared.course, f"{source}/{shared.course}", create=0o755)
        try:
            if shared.staff:
                _staff_writable(top, course, run_as)
            box = None
            if shared.dropbox and not shared.staff:
                box = _own_box(course, f"{source}/{shared.course}", request_user, run_as)
            try:
                _bind(_fd_path(top), view, read_only=not shared.staff, keep=[top])
                if not shared.staff:
                    _mask_other_dropboxes(view, shared.course if box is not None else None)
                if box is not None:
                    _own_dropbox_only(box, view, shared.course, request_user)
            finally:
                if box is not None:
                    os.close(box)
        finally:
            os.close(course)
    finally:
        os.close(top)


def _mask_other_dropboxes(view: Path, skip: str | None) -> None:
    """Every `<course>/dropbox` folder at the top of the bound tree (but `skip`'s,
    which _own_dropbox_only masks) covered by an empty read-only tmpfs: the
    dropboxes of a course whose dropboxes were turned off, or of last term's course,
    hold students' files as much as the current one's. Each is opened under the view
    without following a symlink and mounted on by its fd. A `dropbox` that is a
    symlink or a file is skipped, never followed: the agent only ever makes it a
    folder, so no student's files are in one, and a symlink resolves inside the
    read-only view (to a masked folder or to released material)."""
    tmpfs = ["-t", "tmpfs", "-o", "ro,size=4k,mode=0555", "cloudjhub-dropbox"]
    top = _open_dir(None, str(view), str(view))
    try:
        for name in sorted(os.listdir(top)):
            if name == skip:
                continue
            dropbox = _dropbox_in(top, name)
            if dropbox is None:
                continue
            try:
                _run(["mount", "--no-canonicalize", *tmpfs, _fd_path(dropbox)], [dropbox])
            finally:
                os.close(dropbox)
    finally:
        os.close(top)


def _dropbox_in(top: int, name: str) -> int | None:
    """`name/dropbox` under `top` opened as a folder, neither through a symlink;
    None where either is not a plain folder."""
    try:
        course = os.open(name, DIR_FLAGS, dir_fd=top)
    except OSError:
        return None  # a file, a symlink, gone: no dropboxes in it
    try:
        return os.open("dropbox", DIR_FLAGS, dir_fd=course)
    except OSError:
        return None
    finally:
        os.close(course)


def _open_dir(parent: int | None, name: str, shown: str, create: int | None = None) -> int:
    """A directory opened without following a symlink, made (root's, `create`) when
    missing; anything else (a symlink, a file) is refused."""
    if create is not None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, create, dir_fd=parent)
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise AgentError(
            f"shared folder: {shown} is not a plain folder ({exc.strerror}); refused"
        ) from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):  # O_DIRECTORY says so; belt and braces
        os.close(fd)
        raise AgentError(f"shared folder: {shown} is not a plain folder; refused")
    return fd


def _staff_writable(top: int, course: int, run_as: RunAs) -> None:
    """Accounts have no group but their own (accounts.py), so the staff member's own
    group gets write, on root-owned folders: setgid, so what they make stays in that
    group, and sticky, so they cannot rename or delete what root made there (the
    course folder, `dropbox/`, releases) to plant a symlink for the next student's
    start. Uids and gids are the first user's on every instance in practice; where
    they differ, the latest staff start's group is the one that writes."""
    gid = run_as.gid if run_as.gid is not None else -1
    for fd in (top, course):
        os.fchown(fd, 0, gid)
        os.fchmod(fd, STAFF_MODE)


def _own_box(course: int, shown: str, user: str, run_as: RunAs) -> int:
    """dropbox/ made root's and 0755 again (staff may have changed it), and the
    student's own folder in it, theirs and 0700; its fd."""
    dropbox = _open_dir(course, "dropbox", f"{shown}/dropbox", create=0o755)
    try:
        os.fchown(dropbox, 0, 0)
        os.fchmod(dropbox, 0o755)
        box = _open_dir(dropbox, user, f"{shown}/dropbox/{user}", create=0o700)
    finally:
        os.close(dropbox)
    if run_as.uid is not None:
        os.fchown(box, run_as.uid, run_as.gid if run_as.gid is not None else -1)
    return box


def _own_dropbox_only(box: int, target: Path, course: str, user: str) -> None:
    """Every student's instance runs them as the same uid, so file modes cannot keep
    one student out of another's dropbox: the dropboxes folder is covered by an
    empty read-only tmpfs holding only a mount point for the student's own, bound
    read-write (a student has no root on their instance to undo it). The other
    courses' dropboxes are masked whole (_mask_other_dropboxes).

    The mount points are opened again under the (read-only) bind without following
    symlinks; the paths then given to mount are not canonicalized (root owns every
    folder on the way, sticky, so staff cannot swap one in between)."""
    dropboxes = target / course / "dropbox"
    _check_plain(target, [course, "dropbox"])
    tmpfs = ["-t", "tmpfs", "-o", "size=64k,mode=0755", "cloudjhub-dropbox"]
    _run(["mount", "--no-canonicalize", *tmpfs, str(dropboxes)])
    try:
        _check_plain(target, [course, "dropbox"])
        (dropboxes / user).mkdir()
        _run(["mount", "--no-canonicalize", "-o", "remount,ro", str(dropboxes)])
        _bind(_fd_path(box), dropboxes / user, read_only=False, keep=[box])
    except BaseException:
        unmount_under(dropboxes)
        raise


def _check_plain(top: Path, parts: list[str]) -> None:
    """Each of `parts` below `top` is a real folder, not a symlink (AgentError)."""
    fds = [_open_dir(None, str(top), str(top))]
    try:
        for part in parts:
            fds.append(_open_dir(fds[-1], part, f"{top}/{part}"))
    finally:
        for fd in fds:
            os.close(fd)


def _fd_path(fd: int) -> str:
    """The directory an fd holds, for mount: the kernel follows this magic link to
    exactly that directory, whatever its path has become since."""
    return f"/proc/self/fd/{fd}"


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
    # Imported here: it needs the accounts module, which only a mount needs.
    from .nfs_guard import ensure_nfs_guard

    ensure_nfs_guard()  # before any mount: students reach neither EFS nor the role's keys
    staging = layout.shared_staging
    if staging.is_mount():
        return staging
    staging.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging.mkdir(exist_ok=True)
    _run(efs_mount_argv(shared.file_system_id, staging))
    return staging


def efs_mount_argv(file_system_id: str, staging: Path) -> list[str]:
    """efs-utils' helper with TLS and the instance's role: the file system's policy
    refuses any client without both (launch/iam_shared.py), and only the helper can
    sign a mount with IAM (EFS User Guide, "Mounting with IAM authorization")."""
    if not shutil.which("mount.efs"):
        raise AgentError(
            "shared folder: amazon-efs-utils is not installed; its mount helper "
            "(mount -t efs -o tls,iam) is the only way to mount the file system with "
            "IAM authorization, which its policy requires"
        )
    return ["mount", "-t", "efs", "-o", "tls,iam", f"{file_system_id}:/", str(staging)]


def _bind(source: str, target: Path, read_only: bool, keep: list[int]) -> None:
    """Bind `source` (a /proc/self/fd path, its fd in `keep`) at `target`."""
    _run(["mount", "--no-canonicalize", "--bind", source, str(target)], keep)
    # Private: a dropbox bound below it must not propagate back to the source tree.
    _run(["mount", "--no-canonicalize", "--make-private", str(target)])
    if read_only:
        try:
            _run(["mount", "--no-canonicalize", "-o", "remount,bind,ro", str(target)])
        except AgentError:
            _run(["umount", str(target)])
            raise


def _run(argv: list[str], keep: list[int] | None = None) -> None:
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=MOUNT_TIMEOUT,
            check=False,
            pass_fds=keep or (),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"shared folder: {' '.join(argv[:2])} failed: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no error output"])[-1][:300]
        raise AgentError(f"shared folder: {argv[0]} {argv[-1]} failed: {detail}")


def unmount_shared(layout: Layout) -> list[str]:
    """Unmount /srv/shared (and the dropbox under it), and whatever a start that died
    half-way left where it builds the view; the mount points unmounted."""
    return unmount_under(layout.shared_mount) + unmount_under(layout.shared_view.parent)


def unmount_under(top: Path) -> list[str]:
    """Unmount everything mounted at or below `top`, deepest first (the local cloud
    calls this before it stops or deletes an instance root, so no bind outlives it)."""
    return unmount(mounts_under(top))
