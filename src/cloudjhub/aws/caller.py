"""Which of our processes calls AWS: named in every client's User-Agent.

A process names itself once at its entry point (`name_caller("hub")`); every boto
client it makes then sends `cloudjhub/hub` after botocore's own User-Agent (botocore's
`user_agent_extra`). The like-AWS layer counts calls and refusals per caller by it,
and on AWS CloudTrail records it (each event's `userAgent`), so a storm's
RequestLimitExceeded can be traced to the process that spent the bucket.
"""

from __future__ import annotations

import re

PREFIX = "cloudjhub/"
# A caller not named (a user's own boto3 script, an old build): counted under this.
OTHER = "other"
UNNAMED = "unnamed"
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_IN_AGENT = re.compile(re.escape(PREFIX) + r"([a-z][a-z0-9-]{0,31})(?![a-z0-9-])")

_caller = UNNAMED


def checked_name(component: str) -> str:
    if not _NAME.fullmatch(component):
        raise ValueError(f"a caller's name is lowercase letters, digits and '-', not {component!r}")
    return component


def name_caller(component: str) -> None:
    """This process's name in the User-Agent of every client it makes from now on."""
    global _caller
    _caller = checked_name(component)


def caller() -> str:
    return _caller


def user_agent_extra(component: str | None = None) -> str:
    return PREFIX + (checked_name(component) if component else _caller)


def caller_of(user_agent: str) -> str:
    """The caller a request's User-Agent names (the last `cloudjhub/NAME`), else OTHER."""
    found = _IN_AGENT.findall(user_agent or "")
    return found[-1] if found else OTHER
