"""The home usage the agent reports at each start: a warning on the spawn page when
it is nearly full, a tag on the worker for `cloudjhub status`, and a full home's
message shown to the user as the agent wrote it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from .aws import hub_restores
from .aws.client import CloudError
from .aws.hub import HubEc2
from .executor import blocking
from .spawner_options import SpawnError
from .worker.protocol import EXIT_HOME_FULL, ProtocolError, StartReply

GB = 1 << 30
WARN_FRACTION = 0.9


def home_full(status: int, stderr: str) -> SpawnError | None:
    """The agent's own sentence ("Your home folder is full (X of Y GB used)...")."""
    if status != EXIT_HOME_FULL:
        return None
    line = stderr.strip().splitlines()[-1] if stderr.strip() else "Your home folder is full."
    return SpawnError(line.removeprefix("cloudjhub-worker: ")[:500])


async def report(
    ec2: HubEc2, instance_id: str, stdout: str, emit: Callable[[int, str], None]
) -> None:
    try:
        reply = StartReply.parse(stdout)
    except ProtocolError:
        return
    if reply.home_used is None or not reply.home_size:
        return
    used, size = reply.home_used, reply.home_size
    if used >= WARN_FRACTION * size:
        emit(
            88,
            f"Warning: your home folder is {100 * used / size:.0f}% full "
            f"({used / GB:.1f} of {size / GB:.1f} GB used); delete files or ask your admin "
            "for more space",
        )
    with contextlib.suppress(CloudError):  # a report, not a reason to fail the spawn
        await blocking(hub_restores.tag_usage, ec2, instance_id, used, size)
