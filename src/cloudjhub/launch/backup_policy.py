"""The launch's backup step: the cluster's Data Lifecycle Manager policy, made (or
brought up to date) when `--backup-schedule` is given, and its undo and teardown."""

from __future__ import annotations

from collections.abc import Callable

from ..aws.admin import AdminEc2
from ..aws.backups import DEFAULT_BACKUP_ROLE, Backups, policy_details
from ..aws.client import CloudError
from ..aws.dlm_role import ensure_default_role
from .deletes import Failure
from .iam_backups import DLM_TRUST_POLICY
from .options import LaunchOptions

Say = Callable[[str], None]


def plan_line(opts: LaunchOptions) -> list[str]:
    if opts.backup_schedule is None:
        return []
    kind = "home" if opts.instance.USER_HOME_EBS_SIZE > 0 else "root"
    return [
        f"backup policy (Data Lifecycle Manager): {kind} volumes, {opts.backup_schedule} UTC, "
        f"keep {opts.backup_retain}, role {opts.backup_role or DEFAULT_BACKUP_ROLE}"
    ]


def ensure_backup_policy(
    ec2: AdminEc2, opts: LaunchOptions, say: Say
) -> tuple[str, Callable[[], list[Failure]]] | None:
    """Make the policy; return its id and its undo (None without a schedule)."""
    if opts.backup_schedule is None:
        return None
    backups = Backups.connect(ec2, opts.region, opts.endpoint_url)
    existed = set(backups.policies())
    role = opts.backup_role
    if role is None:
        # A clean account has no DLM default role until someone makes it; kept by undo
        # and destroy, since other policies of the account may use it.
        role, created = ensure_default_role(opts.region, opts.endpoint_url, DLM_TRUST_POLICY)
        if created:
            say(f"created the account's DLM role {DEFAULT_BACKUP_ROLE}")
    details = policy_details(
        opts.cluster,
        opts.instance.USER_HOME_EBS_SIZE > 0,
        opts.backup_schedule,
        opts.backup_retain,
    )
    policy_id = backups.ensure_policy(role, details, say)
    say(f"backup policy {policy_id}: {opts.backup_schedule}, keep {opts.backup_retain}")

    def undo() -> list[Failure]:
        if policy_id in existed:
            return []
        return delete_policies(backups, [policy_id])

    return policy_id, undo


def delete_policies(backups: Backups, policy_ids: list[str]) -> list[Failure]:
    failures = []
    for policy_id in policy_ids:
        try:
            backups.delete_policy(policy_id)
        except CloudError as exc:
            failures.append(Failure(policy_id, str(exc)))
    return failures


def delete_backup_snapshots(backups: Backups, snapshot_ids: list[str]) -> list[Failure]:
    """`destroy --delete-backups`: each snapshot re-read and guarded before its delete."""
    failures = []
    for snapshot_id in snapshot_ids:
        try:
            backups.delete_snapshots([snapshot_id])
        except CloudError as exc:
            failures.append(Failure(snapshot_id, str(exc)))
    return failures
