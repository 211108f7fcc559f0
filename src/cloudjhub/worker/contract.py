"""The parts of the hub-to-worker contract that need no pydantic.

``protocol`` re-exports all of them; they live here so that what does not read a start
request (the watchdog process, most ``cloudjhub-worker`` commands) can use them
without importing pydantic: each agent run and each watchdog pays for every import,
on the user's own (often small) instance, on the path of every login.
"""

from __future__ import annotations

import re

EXIT_FAILURE = 1
EXIT_BAD_REQUEST = 2

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A release is a folder an admin hands out; its name becomes ~/<name> and a file name.
RELEASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A release's digest, and a restored folder's name in the home: restored-<date>.
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
RESTORED_RE = re.compile(r"^restored-\d{4}-\d{2}-\d{2}$")
# The most lines `cloudjhub-worker log --lines` prints (and so `cloudjhub logs`).
MAX_LOG_LINES = 10000


class AgentError(Exception):
    """A failure reported as a message on stderr and a specific exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def check_release_name(name: str) -> str:
    """The one check of a release name, for the agent's options and the hub's command."""
    if not RELEASE_NAME_RE.fullmatch(name) or name.strip(".") == "":
        raise ValueError("bad release name")
    return name
