"""`cloudjhub setup-manager`: run on a manager by the launcher, over SSH."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from ..config import MAX_FILE_BYTES, ConfigError, error_line, parse_json, server_config_from
from .errors import BadInput
from .launch import authenticator_option
from .signin_options import signin_from, signin_options

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
@signin_options
def setup_manager(root: Path, no_start: bool, authenticator: Authenticator, **kw: Any) -> None:
    """Write the hub's configs, keys and unit, then start it. Reads a JSON request on stdin.

    The sign-in comes from the request's "signin" (as the launcher sends it, secret
    included) or else from the options here."""
    from ..launch import manager_setup

    try:
        data = parse_json(sys.stdin.buffer.read(MAX_FILE_BYTES + 1), "the request on stdin")
        request = manager_setup.SetupRequest.model_validate(data)
        # Checked before anything is written: a bad request leaves the root as it was.
        server_config_from({**request.server_config, "SSH_KEY_FILE": "/"}, "server_config")
        if request.signin is None:
            request = request.model_copy(update={"signin": signin_from(authenticator, kw)})
        elif any(kw.values()):
            raise BadInput(
                "sign-in options come from the request's signin or the command line, not both"
            )
        elif request.signin.authenticator != authenticator:
            raise BadInput(
                f"--authenticator {authenticator} and the request's "
                f"{request.signin.authenticator} differ"
            )
    except ValidationError as exc:  # of the request itself; ConfigError names its field
        raise BadInput(f"bad setup request: {error_line(exc)}") from exc
    except ConfigError as exc:
        raise BadInput(f"bad setup request: {exc}") from exc
    click.echo(json.dumps(manager_setup.setup_manager(root, request, not no_start, authenticator)))
