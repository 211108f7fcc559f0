"""A user's persistent home volume: found by its tags, created in their instance's
zone on first use, and attached to their instance (never to anyone else's)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .aws.client import Instance
from .aws.hub import HubEc2
from .executor import blocking
from .home_restore import restore_pending
from .spawner_options import SpawnError
from .tags import tag_dict
from .worker.protocol import HomeVolume, RestoredFolder

HOME_DEVICE = "/dev/sdf"


async def attach_home_volume(
    ec2: HubEc2,
    user: str,
    user_id: str,
    size: int,
    instance: Instance,
    emit: Callable[[int, str], None],
    poll: float,
    give_up_after: float,
    extra_tags: dict[str, str] | None = None,
    server: str = "",
) -> tuple[HomeVolume, RestoredFolder | None]:
    """The home of the user's `server` ("" the default: each named server has its own)
    attached to `instance` (after a pending restore), and the restored folder to
    mount, if the restore was `--as-folder`."""
    volume = await blocking(ec2.find_home_volume, user, server)
    folder: RestoredFolder | None = None
    if volume is None:
        emit(25, f"Creating your {size} GB home volume")
        volume_id = await blocking(
            ec2.create_home_volume,
            user,
            size,
            instance.availability_zone,
            user_id,
            extra_tags,
            server,
        )
        volume = await _wait_available(ec2, user, server, volume_id, poll, give_up_after)
    else:
        # Made before volumes carried ids, or before the hub lost its database.
        await blocking(ec2.adopt, volume["VolumeId"], tag_dict(volume.get("Tags")), user_id)
        volume, folder = await restore_pending(
            ec2, user, user_id, volume, instance, emit, poll, give_up_after, server
        )
    attached = [a["InstanceId"] for a in volume.get("Attachments", [])]
    if instance.id not in attached:
        if attached:
            raise SpawnError(
                f"Your home volume {volume['VolumeId']} is still attached to "
                f"{attached[0]}. Try again in a minute or tell your admin."
            )
        emit(28, "Attaching your home volume")
        await blocking(ec2.attach_volume, volume["VolumeId"], instance.id, HOME_DEVICE)
    home = HomeVolume(
        volume_id=volume["VolumeId"],
        device=HOME_DEVICE,
        size_gb=int(volume["Size"]),
        from_snapshot=volume.get("SnapshotId") or None,
    )
    return home, folder


async def _wait_available(
    ec2: HubEc2, user: str, server: str, volume_id: str, poll: float, give_up_after: float
) -> dict[str, Any]:
    deadline = time.monotonic() + give_up_after
    while True:
        volume = await blocking(ec2.find_home_volume, user, server)
        if volume and volume["VolumeId"] == volume_id and volume["State"] == "available":
            return volume
        if time.monotonic() > deadline:
            raise SpawnError(f"Your home volume {volume_id} did not become available.")
        await asyncio.sleep(poll)
