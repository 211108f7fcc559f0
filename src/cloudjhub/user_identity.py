"""Users bound to a stable id: a name can be reused after its user is deleted.

Workers and home volumes carry `cloudjhub:user-id` beside `cloudjhub:user`.
Deleting a user marks what it keeps of theirs (`cloudjhub:user-deleted`), and a
lookup by name never hands out a marked resource. An id tag naming another id
without the mark is the same person after the hub lost its database (JupyterHub
then gives them a new id): they keep their instance and home, re-bound to the new
id. This module says what the id is, and what deleting a user does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .aws.hub import HubEc2
from .executor import blocking
from .spawner_options import SpawnError


def user_id_of(user: Any) -> str:
    """JupyterHub's id of the user, with when the user was made: SQLite hands a
    deleted user's id to the next user made, the creation time tells them apart."""
    created = getattr(user, "created", None)
    stamp = created.strftime("%Y%m%dT%H%M%S%f") if created else ""
    return f"{user.id}-{stamp}" if stamp else str(user.id)


async def delete_user_resources(
    ec2: HubEc2,
    user: str,
    user_id: str,
    *,
    delete_homes: bool,
    poll: float,
    give_up_after: float,
    log: Callable[[str], None],
) -> None:
    """Terminate the user's workers; delete their home volumes, or keep them marked
    as a deleted user's so that nobody who takes the name later gets them."""
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    workers = await blocking(ec2.user_workers, user)
    doomed = [i.id for i in workers if not i.gone]
    if doomed:
        log(f"user deleted; terminating {', '.join(doomed)}")
        await blocking(ec2.mark_deleted, doomed, user_id, when)
        await blocking(ec2.terminate_workers, doomed)
    for volume in await blocking(ec2.home_volumes, user):
        volume_id = volume["VolumeId"]
        if not delete_homes:
            await blocking(ec2.mark_deleted, [volume_id], user_id, when)
            log(f"user deleted; keeping home volume {volume_id}")
            continue
        await _wait_detached(ec2, user, volume_id, poll, give_up_after)
        await blocking(ec2.delete_home_volume, volume_id)
        log(f"user deleted; deleted home volume {volume_id}")


async def _wait_detached(
    ec2: HubEc2, user: str, volume_id: str, poll: float, give_up_after: float
) -> None:
    """A home volume detaches when its worker terminates; only then can it be deleted."""
    deadline = time.monotonic() + give_up_after
    while True:
        volumes = await blocking(ec2.home_volumes, user, True)
        volume = next((v for v in volumes if v["VolumeId"] == volume_id), None)
        if volume is None or volume.get("State") == "available":
            return
        if time.monotonic() > deadline:
            raise SpawnError(f"home volume {volume_id} did not detach; not deleted")
        await asyncio.sleep(poll)
