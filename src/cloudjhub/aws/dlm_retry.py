"""DLM calls that name a role IAM may not have spread yet.

IAM is eventually consistent: a role just made may not be usable for a few seconds
(IAM User Guide, "Troubleshoot IAM": "Changes that I make are not always immediately
visible"), and meanwhile DLM's CreateLifecyclePolicy (and UpdateLifecyclePolicy)
refuse it with InvalidRequestException, "Provided role <arn> cannot be assumed by
principal 'dlm.amazonaws.com'." That one refusal is retried, with a doubling pause,
for a bounded time; any other error is the caller's at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .client import CloudError, call

NOT_YET_CODE = "InvalidRequestException"
NOT_YET_WORDS = "cannot be assumed by principal"
# IAM usually settles within seconds; a minute is plenty and still bounded.
GIVE_UP_AFTER = 60.0
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 8.0

Say = Callable[[str], None]


def role_not_yet_assumable(exc: CloudError) -> bool:
    return exc.code == NOT_YET_CODE and NOT_YET_WORDS in str(exc)


def call_with_new_role(
    dlm: Any,
    action: str,
    role_arn: str,
    say: Say | None = None,
    give_up_after: float = GIVE_UP_AFTER,
    first_pause: float = FIRST_PAUSE,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **params: Any,
) -> Any:
    """`action` with ExecutionRoleArn=`role_arn`, retried while DLM cannot assume it
    yet; the last refusal is raised once `give_up_after` seconds have passed."""
    started = clock()
    pause = first_pause
    while True:
        try:
            return call(dlm, action, ExecutionRoleArn=role_arn, **params)
        except CloudError as exc:
            waited = clock() - started
            if not role_not_yet_assumable(exc) or waited + pause > give_up_after:
                raise
        if say is not None:
            say(f"  DLM cannot assume {role_arn} yet (IAM is still spreading it); retrying")
        sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)
