"""`cloudjhub setup-manager`: run on a manager by the launcher, over SSH."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from ..config import ConfigError, error_line
from .errors import CommandError
from .launch import authenticator_option

if TYPE_CHECKING:
    from ..launch.options import Authenticator


@click.command("setup-manager")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CLOUDJHUB_WORKER_ROOT", "/"),
    help="Root prefix to write under [default: / or $CLOUDJHUB_WORKER_ROOT].",
)
@click.option("--no-start", is_flag=True, help="Write everything but do not (re)start the hub.")
@authenticator_option
def setup_manager(root: Path, no_start: bool, authenticator: Authenticator) -> None:
    """Write the hub's configs, keys and unit, then start it. Reads a JSON request on stdin."""
    from ..launch.manager_setup import main_json

    try:
        click.echo(main_json(root, sys.stdin.read(), not no_start, authenticator))
    except ValidationError as exc:  # of the request itself; ConfigError names its field
        raise CommandError(f"bad setup request: {error_line(exc)}") from exc
    except (ValueError, ConfigError) as exc:
        raise CommandError(f"bad setup request: {exc}") from exc
