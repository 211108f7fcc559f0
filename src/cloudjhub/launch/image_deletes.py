"""Deleting a worker image: deregister it, then delete its snapshots.

DeleteSnapshot answers InvalidSnapshot.InUse while a snapshot's AMI is registered
("Delete an Amazon EBS snapshot": deregister the AMI first), and for a while after
DeregisterImage, which EC2 applies eventually ("Eventual consistency in the EC2
API"); so a snapshot in use is tried again until SNAPSHOT_DELETE_TIMEOUT.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..aws.admin import AdminEc2, image_snapshots
from .deletes import Failure, Item, Progress, Retry, each, retried

SNAPSHOT_DELETE_TIMEOUT = 300.0


def deregister_images(ec2: AdminEc2, images: Iterable[Item], progress: Progress) -> list[Failure]:
    return each("image", images, ec2.deregister_image, progress)


def delete_snapshots(
    ec2: AdminEc2,
    snapshots: Iterable[Item],
    progress: Progress,
    timeout: float = SNAPSHOT_DELETE_TIMEOUT,
    poll: float = 5.0,
) -> list[Failure]:
    """Delete snapshots; one still InvalidSnapshot.InUse (its image deregistered moments
    ago) is tried again every `poll` seconds until `timeout`; one already gone is fine."""
    retry = Retry(
        "InvalidSnapshot.InUse",
        waiting=lambda names, elapsed: (
            f"{names} still in use by a just-deregistered image: "
            f"retrying every {poll:.0f}s ({elapsed:.0f}s of {timeout:.0f}s)"
        ),
        late=lambda exc, late: f"{exc} (still in use after {late.elapsed:.0f}s)",
        gone="InvalidSnapshot.NotFound",
    )
    return retried(
        snapshots,
        lambda item: ec2.delete_snapshot(item.id),
        lambda item: f"snapshot {item.id}",
        retry,
        progress,
        timeout,
        poll,
    )


def snapshots_of(ec2: AdminEc2, image_id: str) -> tuple[Item, ...]:
    """An image's snapshots, from its block devices and from the cluster's snapshots
    that name it (an image that never became available may list none yet)."""
    ids = set(image_snapshots(ec2.image(image_id) or {}))
    ids |= {
        s["SnapshotId"] for s in ec2.cluster_snapshots() if image_id in s.get("Description", "")
    }
    return tuple(Item(sid) for sid in sorted(ids))


def delete_image(
    ec2: AdminEc2,
    image_id: str,
    progress: Progress,
    timeout: float = SNAPSHOT_DELETE_TIMEOUT,
    poll: float = 5.0,
) -> list[Failure]:
    """One image, then its snapshots (found first: a deregistered image lists none);
    snapshots of an image that could not be deregistered are still in use, so kept."""
    snapshots = snapshots_of(ec2, image_id)
    failures = deregister_images(ec2, [Item(image_id)], progress)
    return failures or delete_snapshots(ec2, snapshots, progress, timeout, poll)
