"""The `cloudjhub` command: a click group; each command lives in `commands/`."""

from __future__ import annotations

from typing import Any

import click

from . import __version__
from .aws.caller import name_caller
from .commands.backups import backups, restore
from .commands.cost import cost
from .commands.demo import demo
from .commands.destroy import destroy
from .commands.errors import BadInput
from .commands.iam_policy import iam_policy
from .commands.launch import launch
from .commands.logs import logs
from .commands.prewarm import prewarm
from .commands.reap import reap
from .commands.release import release
from .commands.resize_home import resize_home
from .commands.setup import setup_manager
from .commands.status import status
from .commands.terminate_workers import terminate_workers
from .commands.users import users
from .commands.warm_pool import warm_pool


class Commands(click.Group):
    """The group, with click's usage errors of a command (a bad value, a missing
    argument) said as every other bad input is: one line, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise BadInput(exc.format_message()) from exc


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudjhub")
def main() -> None:
    """JupyterHub on AWS with one EC2 instance per user, stopped when idle."""
    name_caller("cli")  # a command run as a service names itself again


for command in (
    demo,
    launch,
    setup_manager,
    status,
    logs,
    terminate_workers,
    destroy,
    iam_policy,
    cost,
    reap,
    warm_pool,
    users,
    prewarm,
    backups,
    restore,
    resize_home,
    release,
):
    main.add_command(command)
