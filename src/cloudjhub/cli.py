"""The `cloudjhub` command: a click group; each command lives in `commands/`."""

from __future__ import annotations

import click

from . import __version__
from .commands.demo import demo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudjhub")
def main() -> None:
    """JupyterHub on AWS with one EC2 instance per user, stopped when idle."""


for command in (demo,):
    main.add_command(command)
