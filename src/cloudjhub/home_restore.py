"""A restore the admin asked for (`cloudjhub restore`), performed at the user's next
start, before their home volume is attached.

The request is a tag on the home volume ("<snapshot> volume" or "<snapshot> folder").
The snapshot is checked again here (it must be a backup of this user in this
cluster). `volume`: a new home is made from it, the old one is detached, tagged
cloudjhub:replaced and kept for the admin. `folder`: a second volume made from it is
attached and the agent mounts it read-only at ~/restored-<date of the snapshot>.

A restored folder lasts one session: at every start the previous ones of this
user's server are detached and deleted first (their snapshot stays; `restore
--as-folder` again brings it back), so a second folder restore finds its device
free and no restored-folder volume is left behind. `destroy` deletes any left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .aws import hub_restores, snapshots
from .aws.client import Instance, NotOurs
from .aws.hub import HubEc2
from .executor import blocking
from .spawner_options import SpawnError
from .tags import RESTORE_TAG, tag_dict
from .worker.protocol import RestoredFolder

FOLDER_DEVICE = "/dev/sdg"
Emit = Callable[[int, str], None]


def pending(volume: dict[str, Any]) -> tuple[str, str] | None:
    """(snapshot id, "volume" or "folder") if a restore waits on this volume."""
    value = tag_dict(volume.get("Tags")).get(RESTORE_TAG, "")
    snapshot, _, mode = value.partition(" ")
    if snapshot and mode in {"volume", "folder"}:
        return snapshot, mode
    return None


async def restore_pending(
    ec2: HubEc2,
    user: str,
    user_id: str,
    volume: dict[str, Any],
    instance: Instance,
    emit: Emit,
    poll: float,
    give_up_after: float,
    server: str = "",
) -> tuple[dict[str, Any], RestoredFolder | None]:
    """The home volume to attach (a new one for a `volume` restore) and the restored
    folder to mount, if any; the request is cleared once done."""
    await drop_restored_folders(ec2, user, server, poll, give_up_after)
    request = pending(volume)
    if request is None:
        return volume, None
    snapshot_id, mode = request
    try:
        snapshot = await blocking(snapshots.users_backup, ec2, user, snapshot_id, server)
    except NotOurs as exc:
        raise SpawnError(f"The restore your admin asked for cannot be done: {exc}.") from exc
    size = int(volume.get("Size") or 1)
    if mode == "volume":
        emit(26, f"Restoring your home from the backup {snapshot_id}")
        new_id = await blocking(
            hub_restores.volume_from_snapshot,
            ec2,
            user,
            user_id,
            snapshot,
            instance.availability_zone,
            size,
            None,
            server,
        )
        new = await _wait_state(ec2, new_id, "available", poll, give_up_after)
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await blocking(hub_restores.mark_replaced, ec2, volume["VolumeId"], when)
        if any(a["InstanceId"] == instance.id for a in volume.get("Attachments", [])):
            await blocking(hub_restores.detach, ec2, volume["VolumeId"], instance.id)
            await _wait_state(ec2, volume["VolumeId"], "available", poll, give_up_after)
        return new, None
    name = f"restored-{_day(snapshot.get('StartTime'))}"
    emit(26, f"Restoring your backup {snapshot_id} as ~/{name}")
    folder_id = await blocking(
        hub_restores.volume_from_snapshot,
        ec2,
        user,
        user_id,
        snapshot,
        instance.availability_zone,
        1,
        name,
        server,
    )
    try:
        made = await _wait_state(ec2, folder_id, "available", poll, give_up_after)
        await blocking(ec2.attach_volume, folder_id, instance.id, FOLDER_DEVICE)
    except BaseException:
        await _delete_quietly(ec2, folder_id)
        raise
    await blocking(hub_restores.clear_restore, ec2, volume["VolumeId"])
    folder = RestoredFolder(
        volume_id=folder_id,
        device=FOLDER_DEVICE,
        size_gb=int(made["Size"]),
        from_snapshot=snapshot_id,
        name=name,
    )
    return volume, folder


async def drop_restored_folders(
    ec2: HubEc2, user: str, server: str, poll: float, give_up_after: float
) -> None:
    """Last session's restored folders of `user`'s `server`: detached, then deleted.
    One whose detach does not finish soon (still mounted on a resumed instance) is
    left for the next start rather than holding this one up."""
    for found in await blocking(hub_restores.restored_folders, ec2, user, server):
        volume_id = found["VolumeId"]
        if found["State"] == "deleting":
            continue
        for attachment in found.get("Attachments", []):
            await blocking(hub_restores.detach, ec2, volume_id, attachment["InstanceId"])
        if found.get("Attachments"):
            try:
                await _wait_state(ec2, volume_id, "available", poll, min(give_up_after, 60.0))
            except SpawnError:
                continue
        await blocking(hub_restores.delete_restored_folder, ec2, volume_id)


async def _delete_quietly(ec2: HubEc2, volume_id: str) -> None:
    """A folder volume made for a start that failed: not left behind."""
    try:
        await blocking(hub_restores.delete_restored_folder, ec2, volume_id)
    except Exception:  # the start's own error is the one to report
        return


def _day(start: object) -> str:
    if isinstance(start, datetime):
        return start.strftime("%Y-%m-%d")
    return datetime.now(UTC).strftime("%Y-%m-%d")


async def _wait_state(
    ec2: HubEc2, volume_id: str, state: str, poll: float, give_up_after: float
) -> dict[str, Any]:
    deadline = time.monotonic() + give_up_after
    while True:
        found = await blocking(hub_restores.volume, ec2, volume_id)
        if found is not None and found["State"] == state:
            return found
        if time.monotonic() > deadline:
            raise SpawnError(f"The restored volume {volume_id} did not become {state}.")
        await asyncio.sleep(poll)
