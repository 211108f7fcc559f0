"""How a command fails: one line on stderr, "error: ...", and an exit status.

No traceback reaches a person. Exit 2 is bad input (as for click's own usage
errors), exit 1 anything else: the cloud, a refusal, a failed step. An
endpoint that does not answer, or a region AWS does not have, is bad input:
the user named it.
"""

from __future__ import annotations

from typing import IO, Any

import click

from ..aws.client import INVALID_ENDPOINT, CloudError
from ..aws.reach import UNKNOWN_REGION

# What a person can do about the AWS failures that are theirs to fix.
CLOUD_HINTS = {
    "NoCredentialsError": " (set up AWS credentials: a profile, environment variables or SSO)",
    "NoRegionError": " (pass --region or set AWS_DEFAULT_REGION)",
    "EndpointConnectionError": " (check --aws-endpoint / AWS_ENDPOINT_URL and the network)",
    "ConnectTimeoutError": " (check --aws-endpoint / AWS_ENDPOINT_URL and the network)",
}
# AWS failures that mean an input was wrong (exit 2): where, and in what region.
BAD_INPUT_CODES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "InvalidRegionError",
        INVALID_ENDPOINT,
        UNKNOWN_REGION,
    }
)


class CommandError(click.ClickException):
    """The command cannot go on; click prints the message and exits 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


class BadInput(CommandError):
    """An argument, option or file is wrong, and the message names it: exit 2."""

    exit_code = 2


def cloud_error(exc: CloudError, then: str = "") -> CommandError:
    """An AWS failure as a CommandError (BadInput if an input was wrong), with a hint
    when the fix is the user's."""
    kind = BadInput if exc.code in BAD_INPUT_CODES else CommandError
    return kind(f"{exc}{CLOUD_HINTS.get(exc.code, '')}{then}")
