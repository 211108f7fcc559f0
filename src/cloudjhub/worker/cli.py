"""``cloudjhub-worker``: start, stop and inspect a user's Jupyter server on an instance.

The hub runs this command over SSH on the user's EC2 instance. It also runs in the
local emulator, where an "instance" is a directory (the instance root) and everything
runs as the invoking user. The worker image installs the whole cloudjhub wheel, but
nothing in ``worker/`` imports anything hub-side; ``protocol`` is what both share.

This is the entry point; the commands are ``commands``' (click). ``start`` without
arguments, the hub's call on every login, runs without importing click (a sixth of
its CPU); everything else, ``start --help`` included, goes through click.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .contract import AgentError

# The agent has no pydantic plugins; without this, pydantic scans every installed
# package's entry points for them when the first model is built. Documented by
# pydantic; inherited by nothing that matters (the server and watchdog get their own
# environment) and overridable by setting it to something else.
PLUGINS_VAR = "PYDANTIC_DISABLE_PLUGINS"


def _fail(message: str, status: int) -> NoReturn:
    print(f"cloudjhub-worker: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _start() -> NoReturn:
    """`start`, as the click command runs it, with the same errors and exit statuses."""
    try:
        from .start import start_reply

        reply = start_reply()
    except AgentError as exc:
        _fail(exc.message, exc.exit_code)
    except (KeyboardInterrupt, EOFError):  # what click reports as aborted
        _fail("aborted", 130)
    print(reply, flush=True)
    sys.exit(0)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: every error becomes one line on stderr and a meaningful exit status."""
    os.environ.setdefault(PLUGINS_VAR, "__all__")
    args = list(argv) if argv is not None else sys.argv[1:]
    if args == ["start"]:
        _start()
    import click

    from .commands import cli

    try:
        result = cli.main(args=args, prog_name="cloudjhub-worker", standalone_mode=False)
    except AgentError as exc:
        _fail(exc.message, exc.exit_code)
    except click.UsageError as exc:
        _fail(f"{exc.format_message()} (see --help)", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("aborted", 130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
