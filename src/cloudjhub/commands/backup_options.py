"""`--backup-schedule` and `--backup-retain`, shared by `launch` and `demo`, and
`--server` of `backups`, `restore` and `resize-home`: checked as their values
arrive, so a bad one is one line and exit 2 before anything is made."""

from __future__ import annotations

from typing import Any

import click

from ..backup_schedule import BadSchedule, to_dlm, validate_retain
from ..tags import validate_server_name
from .errors import BadInput
from .options import env_option


def _schedule(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return to_dlm(value)
    except BadSchedule as exc:
        raise BadInput(f"--backup-schedule {value!r}: {exc}") from exc


def _retain(_ctx: click.Context, _param: click.Parameter, value: int) -> int:
    try:
        return validate_retain(value)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


def backup_options(fn: Any) -> Any:
    fn = env_option(
        "--backup-retain",
        type=int,
        default=7,
        show_default=True,
        callback=_retain,
        help="Snapshots kept of each volume (1-1000); the oldest goes when one more is taken.",
    )(fn)
    return env_option(
        "--backup-schedule",
        metavar="CRON",
        default=None,
        callback=_schedule,
        help="Snapshot every user's home volume (root volume without home volumes) on this "
        "schedule, with Amazon Data Lifecycle Manager: Unix cron ('0 3 * * *', UTC) or "
        "DLM's cron(...); at most hourly.",
    )(fn)


def _server(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return validate_server_name(value)
    except ValueError as exc:
        raise BadInput(f"--server: {exc}") from exc


server_option = click.option(
    "--server",
    metavar="NAME",
    default="",
    callback=_server,
    help="The user's named server (JupyterHub named servers each have their own home "
    "volume); omit for the default server.",
)
