"""The shared course folder's settings, as `launch` and `demo` are given them and as
server_config.json keeps them: checked once here, so a bad value is one line."""

from __future__ import annotations

from dataclasses import dataclass

from .worker.protocol import COURSE_RE, check_course_name

SHARED_STORAGE_KINDS = ("efs",)
# Where every worker mounts it; `cloudjhub release` puts a release at /srv/shared/<NAME>.
SHARED_MOUNT = "/srv/shared"


@dataclass(frozen=True)
class SharedSettings:
    storage: str
    course: str
    dropbox: bool


def shared_settings(
    storage: str | None, dropbox: bool, course: str | None, cluster: str
) -> SharedSettings | None:
    """The settings, or ValueError with the one line that names the bad option."""
    if storage is None:
        if dropbox:
            raise ValueError(
                "--dropbox needs --shared-storage: the dropbox is in the shared folder"
            )
        if course is not None:
            raise ValueError("--course needs --shared-storage: it names the shared folder's course")
        return None
    if storage not in SHARED_STORAGE_KINDS:
        raise ValueError(
            f"--shared-storage {storage!r}: not a kind of shared storage; one of "
            + ", ".join(SHARED_STORAGE_KINDS)
        )
    name = cluster if course is None else course
    try:
        check_course_name(name)
    except ValueError:
        raise ValueError(
            f"--course {name!r}: a course name is 1-64 letters, digits, '.', '_', '-', "
            f"starting with a letter or digit ({COURSE_RE.pattern})"
        ) from None
    return SharedSettings(storage, name, dropbox)
