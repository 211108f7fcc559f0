"""One snapshot read by id, and the check that it is a backup of one user's server in
this cluster: shared by the admin's `restore`, its deletes, and the hub's restores."""

from __future__ import annotations

from typing import Any

from ..tags import CLUSTER_TAG, ROLE_TAG, USER_TAG, Role, server_of, tag_dict
from .client import NotOurs
from .hub import HubEc2

# What DLM backs up: home volumes, or worker root volumes without home volumes.
BACKED_UP_ROLES = frozenset({Role.HOME.value, Role.WORKER.value})


def snapshot(ec2: HubEc2, snapshot_id: str) -> dict[str, Any] | None:
    """The account's own snapshot `snapshot_id`, or None."""
    return ec2._by_id(
        "describe_snapshots",
        "Snapshots",
        "SnapshotId",
        "snapshot-id",
        [snapshot_id],
        OwnerIds=["self"],
    ).get(snapshot_id)


def users_backup(ec2: HubEc2, user: str, snapshot_id: str, server: str = "") -> dict[str, Any]:
    """`snapshot_id`, re-read, if it is a backup of `user`'s `server` ("" the default) in
    this cluster; else NotOurs saying whose it is not."""
    found = snapshot(ec2, snapshot_id)
    tags = tag_dict(found.get("Tags")) if found else {}
    if (
        found is None
        or tags.get(CLUSTER_TAG) != ec2.cluster
        or tags.get(USER_TAG) != user
        or tags.get(ROLE_TAG) not in BACKED_UP_ROLES
    ):
        raise NotOurs(
            f"snapshot {snapshot_id} is not a backup of {user}'s home in cluster {ec2.cluster}"
        )
    if server_of(tags) != server:
        theirs = f"named server {server_of(tags)!r}" if server_of(tags) else "default server"
        raise NotOurs(
            f"snapshot {snapshot_id} is a backup of {user}'s {theirs}"
            + (f", not of named server {server!r}" if server else ", not of the default server")
        )
    return found
