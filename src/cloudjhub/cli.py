"""The `cloudjhub` command: a click group; each command lives in `commands/`."""

from __future__ import annotations

import click

from . import __version__
from .commands.cost import cost
from .commands.demo import demo
from .commands.destroy import destroy
from .commands.iam_policy import iam_policy
from .commands.launch import launch
from .commands.reap import reap
from .commands.setup import setup_manager
from .commands.status import status
from .commands.terminate_workers import terminate_workers
from .commands.warm_pool import warm_pool


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudjhub")
def main() -> None:
    """JupyterHub on AWS with one EC2 instance per user, stopped when idle."""


for command in (
    demo,
    launch,
    setup_manager,
    status,
    terminate_workers,
    destroy,
    iam_policy,
    cost,
    reap,
    warm_pool,
):
    main.add_command(command)
