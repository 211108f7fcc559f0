"""The worker image: a builder instance, provisioned, imaged, terminated."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..aws.admin import AdminEc2
from ..aws.client import CloudError, Instance
from ..tags import GPU_TAG, Role, image_name, tags_for
from ..waiting import TimedOut, poll_until

Progress = Callable[[str], None]


def find_worker_image(ec2: AdminEc2) -> str | None:
    image = ec2.find_image(tags_for(ec2.cluster, Role.IMAGE))
    return image["ImageId"] if image and image.get("State") == "available" else None


def image_has_gpu(ec2: AdminEc2, image_id: str) -> bool:
    """Whether an image was built with --gpu-image (its GPU_TAG)."""
    tags = {t["Key"]: t["Value"] for t in (ec2.image(image_id) or {}).get("Tags", [])}
    return tags.get(GPU_TAG) == "true"


def build_worker_image(
    ec2: AdminEc2,
    base_ami: str,
    instance_type: str,
    subnet_id: str,
    group_ids: list[str],
    key_name: str,
    provision: Callable[[Instance], None] | None = None,
    progress: Progress = print,
    timeout: float = 1800.0,
    poll: float = 5.0,
    public_ip: bool = False,
    on_image: Callable[[str], None] | None = None,
    gpu: bool = False,
) -> str:
    """Build the image; the builder is terminated whatever happens. `on_image` hears
    the image id as soon as it exists, so a caller can undo it if the wait fails."""
    existing = find_worker_image(ec2)
    if existing:
        progress(f"worker image {existing} already exists")
        return existing
    builder = ec2.run_instance(
        base_ami,
        instance_type,
        subnet_id,
        group_ids,
        key_name,
        tags_for(ec2.cluster, Role.BUILDER),
        public_ip=public_ip,
    )

    progress(f"builder instance {builder.id} launched")
    try:
        builder = _wait_instance(ec2, builder.id, "running", timeout, poll, progress)
        if provision is not None:
            provision(builder)
        name = image_name(ec2.cluster, time.strftime("%Y%m%d-%H%M%S"))
        tags = {**tags_for(ec2.cluster, Role.IMAGE), **({GPU_TAG: "true"} if gpu else {})}
        image_id = ec2.create_image(builder.id, name, tags)
        if on_image is not None:
            on_image(image_id)
        progress(f"imaging {builder.id} as {image_id}")
        _wait_image(ec2, image_id, timeout, poll, progress)
        ec2.tag_image_snapshots(image_id, tags_for(ec2.cluster, Role.IMAGE))
        progress(f"worker image {image_id} is available")
        return image_id
    finally:
        ec2.terminate([builder.id], roles=[Role.BUILDER])
        progress(f"builder instance {builder.id} terminated")


def _wait_instance(
    ec2: AdminEc2, instance_id: str, state: str, timeout: float, poll: float, progress: Progress
) -> Instance:
    try:
        polled = poll_until(
            lambda: ec2.describe([instance_id]),
            timeout=timeout,
            interval=poll,
            done=lambda found: bool(found) and found[0].state == state,
            progress=lambda _found, _elapsed: progress(f"waiting for {instance_id} to be {state}"),
        )
    except TimedOut as late:
        raise CloudError(f"instance {instance_id} did not become {state}") from late
    return polled.value[0]


def _wait_image(
    ec2: AdminEc2, image_id: str, timeout: float, poll: float, progress: Progress
) -> None:
    def state() -> str:
        now = ec2.image_state(image_id)
        if now in ("failed", "deregistered", "missing"):
            raise CloudError(f"worker image {image_id} ended in state {now!r}")
        return now

    try:
        poll_until(
            state,
            timeout=timeout,
            interval=poll,
            done="available".__eq__,
            progress=lambda now, elapsed: progress(
                f"waiting for image {image_id}: {now} ({elapsed:.0f}s)"
            ),
        )
    except TimedOut as late:
        raise CloudError(f"worker image {image_id} ended in state {late.value!r}") from late
