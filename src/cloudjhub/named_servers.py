"""JupyterHub's named servers, each its own worker and home volume.

A named server's worker and home volume carry `cloudjhub:server=<name>`; the
default server's carry no such tag, so instances made before named servers
existed stay the default server's. This module says what a server's name may be
(it comes from JupyterHub, so from the user) and what removing or renaming a
named server does to its resources. Deleting a whole user is `user_identity`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .aws.hub import HubEc2
from .executor import blocking
from .spawner_options import SpawnError
from .tags import Role, validate_server_name


def checked_server_name(name: str) -> str:
    """The spawner's server name, refused with a sentence before any EC2 call."""
    try:
        return validate_server_name(name)
    except ValueError as exc:
        raise SpawnError(f"Cannot start this server: {exc}.") from exc


async def remove_server(
    ec2: HubEc2,
    user: str,
    server: str,
    *,
    delete_home: bool,
    poll: float,
    give_up_after: float,
    log: Callable[[str], None],
) -> None:
    """JupyterHub removed a named server: terminate its worker; delete its home
    volume only if `delete_home` (delete_home_on_remove), else keep it for a
    server of the same name made later."""
    workers = await blocking(ec2.user_workers, user, server)
    doomed = [i.id for i in workers if not i.gone]
    if doomed:
        log(f"server removed; terminating {', '.join(doomed)}")
        await blocking(ec2.terminate_workers, doomed)
    for volume in await blocking(ec2.home_volumes, user, False, server):
        volume_id = volume["VolumeId"]
        if not delete_home:
            log(f"server removed; keeping home volume {volume_id}")
            continue
        await _wait_detached(ec2, user, server, volume_id, poll, give_up_after)
        await blocking(ec2.delete_home_volume, volume_id)
        log(f"server removed; deleted home volume {volume_id}")


async def _wait_detached(
    ec2: HubEc2, user: str, server: str, volume_id: str, poll: float, give_up_after: float
) -> None:
    deadline = time.monotonic() + give_up_after
    while True:
        volumes = await blocking(ec2.home_volumes, user, False, server)
        volume = next((v for v in volumes if v["VolumeId"] == volume_id), None)
        if volume is None or volume.get("State") == "available":
            return
        if time.monotonic() > deadline:
            raise SpawnError(f"home volume {volume_id} did not detach; not deleted")
        await asyncio.sleep(poll)


async def rename_server(ec2: HubEc2, user: str, old: str, new: str) -> list[str]:
    """Retag a named server's workers and home volumes with its new name; returns the
    ids retagged. Renaming to or from the default server is refused: the default
    has no tag, and JupyterHub's own check already refuses an empty name."""
    if not old or not new:
        raise ValueError("only a named server can be renamed, and only to a name")
    validate_server_name(new)
    workers = [i.id for i in await blocking(ec2.user_workers, user, old) if not i.gone]
    volumes = [v["VolumeId"] for v in await blocking(ec2.home_volumes, user, False, old)]
    await blocking(ec2.rename_server, workers, user, Role.WORKER, new)
    await blocking(ec2.rename_server, volumes, user, Role.HOME, new)
    return workers + volumes
