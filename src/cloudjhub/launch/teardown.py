"""Tearing a cluster down: find what is tagged for it, then delete it in order.

Finding and deleting are separate steps so that --dry-run and the confirmation
prompt show exactly what the deletion will touch. Every delete goes through an
`AdminEc2` guard that re-reads the resource's tags first. Failures are collected,
not raised, so one stuck resource does not hide what else is left. A failed
launch undoes what it made with these same deletes (`launch/undo.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..aws.admin import AdminEc2, image_snapshots
from ..aws.client import CloudError, Instance
from ..tags import (
    CLUSTER_TAG,
    POOL_TAG,
    RESTORED_FOLDER_TAG,
    USER_TAG,
    Group,
    Role,
    group_name,
    server_of,
    tag_dict,
    workers_key_name,
)
from ..waiting import TimedOut, poll_until
from .deletes import Failure, Item, Progress, Retry, each, retried
from .image_deletes import SNAPSHOT_DELETE_TIMEOUT, delete_snapshots, deregister_images

# Rules point manager2 -> worker -> manager, so delete in this order.
GROUP_ORDER = (Group.MANAGER2, Group.WORKER, Group.MANAGER)
DESTROY_ROLES = (Role.WORKER, Role.MANAGER, Role.BUILDER)
_DEPENDENCY_HINT = (
    " (still used by an instance or network interface, or referenced by a security group "
    "of another cluster or account; remove that use and run destroy again)"
)
# On AWS the network interfaces of just-terminated instances linger for a few
# minutes, and a group they use cannot be deleted until they are gone.
GROUP_DELETE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Plan:
    cluster: str
    instances: tuple[Instance, ...] = ()
    home_volumes: tuple[Item, ...] = ()
    kept_home_volumes: int = 0
    groups: tuple[Item, ...] = ()
    images: tuple[Item, ...] = ()
    snapshots: tuple[Item, ...] = ()
    key_pair: str | None = None
    left_alone: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.instances
            or self.home_volumes
            or self.groups
            or self.images
            or self.snapshots
            or self.key_pair
        )


def _live(instances: Iterable[Instance]) -> tuple[Instance, ...]:
    alive = [i for i in instances if i.state != "terminated"]
    return tuple(sorted(alive, key=lambda i: (i.role or "", i.user or "", i.id)))


def _home_volumes(ec2: AdminEc2, restored_folders: bool = False) -> tuple[Item, ...]:
    """The cluster's home volumes (only its restored folders: copies of a snapshot,
    deleted by every teardown, while homes go only when asked)."""
    volumes = ec2.cluster_volumes(Role.HOME)
    if restored_folders:
        volumes = [v for v in volumes if RESTORED_FOLDER_TAG in tag_dict(v.get("Tags"))]
    items = [
        Item(v["VolumeId"], _volume_label(tag_dict(v.get("Tags")), v["State"])) for v in volumes
    ]
    return tuple(sorted(items, key=lambda i: i.label))


def _volume_label(tags: dict[str, str], state: str) -> str:
    kind = "restored folder" if RESTORED_FOLDER_TAG in tags else "home"
    return f"{kind} of {_whose(tags)}, {state}"


def _homes_to_delete(ec2: AdminEc2, delete_home_volumes: bool) -> tuple[tuple[Item, ...], int]:
    """(volumes to delete, homes kept)."""
    homes = _home_volumes(ec2)
    if delete_home_volumes:
        return homes, 0
    folders = _home_volumes(ec2, restored_folders=True)
    return folders, len(homes) - len(folders)


def plan_terminate_workers(ec2: AdminEc2, delete_home_volumes: bool) -> Plan:
    homes, kept = _homes_to_delete(ec2, delete_home_volumes)
    return Plan(
        ec2.cluster,
        instances=_live(ec2.describe_workers()),
        home_volumes=homes,
        kept_home_volumes=kept,
    )


def _groups(ec2: AdminEc2) -> tuple[tuple[Item, ...], list[str]]:
    names = [group_name(ec2.cluster, group) for group in GROUP_ORDER]
    ours: dict[str, Item] = {}
    notes = []
    for group in ec2.security_groups_named(names):
        gid, name = group["GroupId"], group["GroupName"]
        if tag_dict(group.get("Tags")).get(CLUSTER_TAG) == ec2.cluster:
            ours[gid] = Item(gid, name)
        else:
            notes.append(f"security group {gid} ({name}) is not tagged {CLUSTER_TAG}={ec2.cluster}")
    ordered = sorted(ours.values(), key=lambda g: names.index(g.label))
    return tuple(ordered), notes


def _images(ec2: AdminEc2) -> tuple[tuple[Item, ...], tuple[Item, ...], list[str]]:
    images = ec2.cluster_images()
    snapshots = {s["SnapshotId"]: s for s in ec2.cluster_snapshots()}
    notes = [
        f"snapshot {sid} of image {image['ImageId']} is not tagged {CLUSTER_TAG}={ec2.cluster}"
        for image in images
        for sid in image_snapshots(image)
        if sid not in snapshots
    ]
    return (
        tuple(Item(i["ImageId"], i.get("Name", "")) for i in images),
        tuple(Item(sid, s.get("Description", "")) for sid, s in sorted(snapshots.items())),
        notes,
    )


def plan_destroy(ec2: AdminEc2, delete_home_volumes: bool) -> Plan:
    instances = [i for i in ec2.describe_cluster() if i.role in {r.value for r in DESTROY_ROLES}]
    groups, group_notes = _groups(ec2)
    images, snapshots, image_notes = _images(ec2)
    key = ec2.key_pair(workers_key_name(ec2.cluster))
    key_notes = []
    if key and tag_dict(key.get("Tags")).get(CLUSTER_TAG) != ec2.cluster:
        key_notes.append(f"key pair {key['KeyName']} is not tagged {CLUSTER_TAG}={ec2.cluster}")
        key = None
    homes, kept = _homes_to_delete(ec2, delete_home_volumes)
    return Plan(
        ec2.cluster,
        instances=_live(instances),
        home_volumes=homes,
        kept_home_volumes=kept,
        groups=groups,
        images=images,
        snapshots=snapshots,
        key_pair=key["KeyName"] if key else None,
        left_alone=tuple(group_notes + image_notes + key_notes),
    )


def _whose(tags: dict[str, str]) -> str:
    """A resource's user, and their named server after a '/' (none for the default)."""
    server = server_of(tags)
    return tags.get(USER_TAG, "?") + (f"/{server}" if server else "")


def _owner(instance: Instance) -> str:
    """Whose instance: its user (and named server), or "(pool)" for an unassigned
    warm-pool worker."""
    if instance.user:
        return _whose(instance.tags)
    return "(pool)" if POOL_TAG in instance.tags else "-"


def plan_lines(plan: Plan) -> list[str]:
    """What the plan deletes, one resource per line, for the prompt and --dry-run."""
    lines: list[str] = []
    if plan.instances:
        lines.append(f"instances ({len(plan.instances)}):")
        lines += [f"  {i.id}  {i.role or '-':<8} {_owner(i):<20} {i.state}" for i in plan.instances]
    for title, items in (
        ("home volumes", plan.home_volumes),
        ("security groups", plan.groups),
        ("images", plan.images),
        ("snapshots", plan.snapshots),
    ):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {i.id}  {i.label}" for i in items]
    if plan.key_pair:
        lines.append(f"key pair: {plan.key_pair}")
    return lines


def note_lines(plan: Plan) -> list[str]:
    """What is kept or left alone, and why."""
    lines = [f"left alone: {note}" for note in plan.left_alone]
    if plan.kept_home_volumes:
        lines.append(
            f"kept: {plan.kept_home_volumes} home volume(s); --delete-home-volumes deletes them"
        )
    return lines


def wait_for(
    what: str,
    read: Callable[[], dict[str, str]],
    done: Callable[[str], bool],
    progress: Progress,
    timeout: float,
    poll: float,
) -> dict[str, str]:
    """Poll `read` until every state is done or the deadline passes; return the last states."""

    def report(states: dict[str, str], elapsed: float) -> None:
        summary = ", ".join(f"{n} {s}" for s, n in sorted(Counter(states.values()).items()))
        progress(f"waiting for {what}: {summary} ({elapsed:.0f}s)")

    try:
        polled = poll_until(
            read,
            timeout=timeout,
            interval=poll,
            done=lambda states: all(done(s) for s in states.values()),
            what=what,
            progress=report,
        )
    except TimedOut as late:
        left: dict[str, str] = late.value
        report(left, late.elapsed)  # the caller reports what is left as failed
        return left
    progress(f"{what}: done ({polled.elapsed:.0f}s)")
    return polled.value


def terminate(
    ec2: AdminEc2,
    instances: Iterable[Instance],
    roles: Iterable[Role],
    progress: Progress,
    timeout: float,
    poll: float,
) -> list[Failure]:
    """Terminate explicit, guarded instance ids and wait until they are gone."""
    ids = [i.id for i in instances]
    if not ids:
        return []
    try:
        ec2.terminate(ids, roles=roles)
    except CloudError as exc:
        return [Failure(f"instances {', '.join(ids)}", str(exc))]

    def read() -> dict[str, str]:
        found = {i.id: i.state for i in ec2.describe(ids)}
        return {i: found.get(i, "terminated") for i in ids}

    states = wait_for(
        f"{len(ids)} instance(s) to terminate", read, "terminated".__eq__, progress, timeout, poll
    )
    return [
        Failure(f"instance {i}", f"still {s} after {timeout:.0f}s")
        for i, s in states.items()
        if s != "terminated"
    ]


def delete_home_volumes(
    ec2: AdminEc2, volumes: Iterable[Item], progress: Progress, timeout: float, poll: float
) -> list[Failure]:
    """Delete home volumes once detached; any still attached at the deadline is kept."""
    ids = [v.id for v in volumes]
    if not ids:
        return []
    states = wait_for(
        f"{len(ids)} home volume(s) to be detached",
        lambda: ec2.volume_states(ids),
        lambda s: s in ("available", "missing"),
        progress,
        timeout,
        poll,
    )
    failures = []
    for vid in ids:
        if states[vid] == "missing":
            continue
        try:
            ec2.delete_home_volume(vid)
            progress(f"deleted home volume {vid}")
        except CloudError as exc:
            failures.append(Failure(f"volume {vid}", str(exc)))
    return failures


def delete_groups(
    ec2: AdminEc2,
    groups: Iterable[Item],
    progress: Progress,
    timeout: float | None = None,
    poll: float = 5.0,
) -> list[Failure]:
    """Drop our groups' references to each other, then delete them in order.

    A delete refused with DependencyViolation (on AWS, network interfaces of
    instances just terminated linger for a while) is tried again every `poll`
    seconds until `timeout` (default GROUP_DELETE_TIMEOUT, 300 s) has passed
    since the first attempt; only then is the group reported as not deleted.
    """
    limit = GROUP_DELETE_TIMEOUT if timeout is None else timeout
    items = list(groups)
    ids = [g.id for g in items]
    for group in items:
        try:
            if ec2.revoke_group_references(group.id, ids):
                progress(f"revoked rules of {group.id} ({group.label}) naming the cluster's groups")
        except CloudError as exc:
            progress(f"could not revoke rules of {group.id}: {exc}")

    def late(exc: CloudError, timed_out: TimedOut) -> str:
        attempts = timed_out.last.checks
        tried = f"; tried {attempts} times in {timed_out.elapsed:.0f}s" if attempts > 1 else ""
        return f"{exc}{_DEPENDENCY_HINT}{tried}"

    retry = Retry(
        "DependencyViolation",
        waiting=lambda names, elapsed: (
            f"waiting for {names} to lose their dependents "
            f"(DependencyViolation; network interfaces of terminated instances linger): "
            f"retrying every {poll:.0f}s ({elapsed:.0f}s of {limit:.0f}s)"
        ),
        late=late,
    )
    return retried(
        items,
        lambda group: ec2.delete_security_group(group.id),
        lambda group: f"security group {group.id} ({group.label})",
        retry,
        progress,
        limit,
        poll,
    )


def delete_key_pair(ec2: AdminEc2, name: str, progress: Progress) -> list[Failure]:
    return each("key pair", [Item(name)], ec2.delete_key_pair, progress)


def destroy(
    ec2: AdminEc2,
    plan: Plan,
    progress: Progress,
    timeout: float,
    poll: float,
    group_timeout: float | None = None,
) -> list[Failure]:
    """Delete what `plan` lists, instances first; return what could not be deleted.

    `group_timeout` bounds the retries of a security-group delete refused with
    DependencyViolation (default GROUP_DELETE_TIMEOUT); `poll` spaces them.
    """
    failures = terminate(ec2, plan.instances, DESTROY_ROLES, progress, timeout, poll)
    failures += delete_home_volumes(ec2, plan.home_volumes, progress, timeout, poll)
    failures += delete_groups(ec2, plan.groups, progress, group_timeout, poll)
    failures += deregister_images(ec2, plan.images, progress)
    failures += delete_snapshots(ec2, plan.snapshots, progress, SNAPSHOT_DELETE_TIMEOUT, poll)
    if plan.key_pair:
        failures += delete_key_pair(ec2, plan.key_pair, progress)
    return failures
