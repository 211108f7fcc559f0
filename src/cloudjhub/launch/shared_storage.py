"""The launch's shared-folder step (`--shared-storage efs`): the cluster's EFS file
system, its NFS security group, a mount target in each workers' subnet, the workers'
role and instance profile and the file system policy that admits only the workers'
and the manager's roles (iam_shared.py), made or found again; and what `destroy` does
with them."""

from __future__ import annotations

from collections.abc import Callable

from ..aws.admin import AdminEc2
from ..aws.client import CloudError
from ..aws.shared_storage import SharedStorage, shared_group_name
from ..aws.worker_role import WorkersRole, profile_role_arns
from ..config import worker_subnets
from ..tags import workers_role_name
from .deletes import Failure
from .groups import ClusterGroups
from .iam_shared import EC2_TRUST, file_system_policy, workers_role_policy
from .options import LaunchOptions

Say = Callable[[str], None]


def plan_line(opts: LaunchOptions) -> list[str]:
    if opts.shared is None:
        return []
    subnets = _subnets(opts)
    return [
        f"shared folder: encrypted EFS file system (course {opts.shared.course}"
        + (", dropboxes" if opts.shared.dropbox else "")
        + f"), security group {shared_group_name(opts.cluster)} (NFS from the workers and "
        f"the manager), mount targets in {', '.join(subnets)} (and {opts.public_subnet} if "
        "the manager's zone has none)",
        f"shared folder: IAM role and instance profile {workers_role_name(opts.cluster)} "
        "(mount the file system, nothing else), file system policy: TLS only, mounts "
        "only by the workers' and the manager's roles",
    ]


def _subnets(opts: LaunchOptions) -> list[str]:
    return worker_subnets(opts.private_subnet, opts.instance.SUBNET_IDS) or [opts.private_subnet]


def target_subnets(ec2: AdminEc2, opts: LaunchOptions) -> dict[str, str]:
    """Subnet -> zone: one workers' subnet per zone (EFS allows one mount target per
    zone, and it serves the zone's every subnet), and the manager's public one when
    no workers' subnet is in its zone: EFS's DNS name resolves to the mount target of
    the client's zone."""
    subnets = _subnets(opts)
    found = ec2.subnets([*subnets, opts.public_subnet])
    chosen: dict[str, str] = {}
    for subnet in [*subnets, opts.public_subnet]:
        zone = str(found[subnet].get("AvailabilityZone"))
        if zone not in chosen.values():
            chosen[subnet] = zone
    return chosen


def ensure_shared_storage(
    ec2: AdminEc2, opts: LaunchOptions, groups: ClusterGroups, vpc_id: str, say: Say
) -> tuple[str, str, Callable[[], list[Failure]]] | None:
    """Make (or find) the file system, group, mount targets, workers' role and the file
    system policy; the file system's id, the workers' instance profile and the undo."""
    if opts.shared is None:
        return None
    storage = SharedStorage.connect(
        ec2, opts.region, opts.endpoint_url, opts.timeout, opts.poll, say
    )
    role = WorkersRole.connect(opts.cluster, opts.region, opts.endpoint_url)
    fs_id, created = storage.ensure_file_system()
    role_made = False

    def undo() -> list[Failure]:
        failures = delete_workers_role(role) if role_made else []
        return failures + (delete_shared_storage(storage, fs_id) if created else [])

    try:
        # The manager mounts it too: `cloudjhub release` copies into it there.
        group, _ = storage.ensure_group(vpc_id, [groups.worker, groups.manager])
        storage.ensure_mount_targets(fs_id, target_subnets(ec2, opts), group)
        fs_arn = storage.arn(fs_id)
        role_arn, role_made = role.ensure(EC2_TRUST, workers_role_policy(fs_arn))
        principals = [role_arn, *manager_roles(opts, say)]
        storage.put_policy(fs_id, file_system_policy(fs_arn, principals))
    except CloudError:
        for failure in undo():
            say(f"  could NOT roll back {failure.resource}: {failure.reason}")
        raise
    say(
        f"shared folder: EFS {fs_id}"
        + (" (created)" if created else " (reused)")
        + f", mounted only by the roles {', '.join(principals)}"
    )
    return fs_id, role.name, undo


def manager_roles(opts: LaunchOptions, say: Say) -> list[str]:
    """The manager's role(s), which mount the folder for `release`; none without
    --instance-profile (then `release` on the manager cannot mount it)."""
    if not opts.instance_profile:
        say(
            "  no --instance-profile: the manager's mount of the shared folder will be "
            "refused by its file system policy (`cloudjhub release` needs it)"
        )
        return []
    return profile_role_arns(opts.instance_profile, opts.region, opts.endpoint_url)


def delete_shared_storage(storage: SharedStorage, fs_id: str) -> list[Failure]:
    try:
        storage.delete(fs_id)
    except CloudError as exc:
        return [Failure(fs_id, str(exc))]
    return []


def delete_workers_role(role: WorkersRole) -> list[Failure]:
    try:
        role.delete()
    except CloudError as exc:
        return [Failure(f"IAM role {role.name}", str(exc))]
    return []
