"""`cloudjhub setup-manager`: run on a manager by the launcher, over SSH."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from ..config import MAX_FILE_BYTES, ConfigError, error_line, parse_json, server_config_from
from .errors import BadInput
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
    from ..launch import manager_setup

    try:
        data = parse_json(sys.stdin.buffer.read(MAX_FILE_BYTES + 1), "the request on stdin")
        request = manager_setup.SetupRequest.model_validate(data)
        # Checked before anything is written: a bad request leaves the root as it was.
        server_config_from({**request.server_config, "SSH_KEY_FILE": "/"}, "server_config")
    except ValidationError as exc:  # of the request itself; ConfigError names its field
        raise BadInput(f"bad setup request: {error_line(exc)}") from exc
    except ConfigError as exc:
        raise BadInput(f"bad setup request: {exc}") from exc
    click.echo(json.dumps(manager_setup.setup_manager(root, request, not no_start, authenticator)))
