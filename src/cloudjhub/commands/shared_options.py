"""`--shared-storage`, `--course` and `--dropbox` of `launch` (and `demo`'s flag form):
checked together before anything is made, so a bad one is one line and exit 2."""

from __future__ import annotations

from typing import Any

import click

from ..shared_folder import SHARED_STORAGE_KINDS, SharedSettings, shared_settings
from ..tags import validate_cluster_name
from .errors import BadInput
from .options import env_option

DROPBOX_HELP = (
    "With the shared folder: a writable /srv/shared/<course>/dropbox/<user> for each student."
)
COURSE_HELP = "The course's folder in the shared folder [default: the cluster's name]."


def shared_options(fn: Any) -> Any:
    """launch's: --shared-storage KIND, --course NAME, --dropbox."""
    fn = click.option("--dropbox", is_flag=True, help=DROPBOX_HELP)(fn)
    fn = env_option("--course", metavar="NAME", default=None, help=COURSE_HELP)(fn)
    return env_option(
        "--shared-storage",
        metavar="KIND",
        default=None,
        help="A shared course folder every worker mounts at /srv/shared (read-only for "
        "students, writable for admins and TAs); KIND: "
        + ", ".join(SHARED_STORAGE_KINDS)
        + " (Amazon EFS). Files there cost once, not once per student.",
    )(fn)


def demo_shared_options(fn: Any) -> Any:
    """demo's: --shared-storage (a flag: the local cloud's EFS), --course, --dropbox."""
    fn = click.option("--dropbox", is_flag=True, help=DROPBOX_HELP)(fn)
    fn = click.option("--course", metavar="NAME", default=None, help=COURSE_HELP)(fn)
    return click.option(
        "--shared-storage",
        is_flag=True,
        help="A shared course folder at /srv/shared on every worker (the local cloud's EFS).",
    )(fn)


def checked(kw: dict[str, Any], cluster: str, then: str = "") -> SharedSettings | None:
    """Take the three options out of `kw`, checked together."""
    storage = kw.pop("shared_storage", None)
    try:
        validate_cluster_name(cluster)  # the course's default: the cluster's own error first
    except ValueError as exc:
        raise BadInput(f"{exc}{then}") from None
    if storage is True:
        storage = "efs"
    try:
        return shared_settings(
            storage or None, bool(kw.pop("dropbox", False)), kw.pop("course", None), cluster
        )
    except ValueError as exc:
        raise BadInput(f"{exc}{then}") from None
