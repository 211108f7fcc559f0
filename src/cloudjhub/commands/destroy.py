"""`cloudjhub destroy CLUSTER`: delete everything tagged for the cluster, in order."""

from __future__ import annotations

import click

from ..aws.backups import Backups
from ..aws.client import CloudError
from ..launch import teardown
from ..launch.backup_policy import delete_backup_snapshots, delete_policies
from .cloud_options import aws_options, cluster_argument, confirm, connect, report, say, show_plan
from .errors import cloud_error
from .shared_destroy import SharedTeardown

WAIT_TIMEOUT = 900.0
POLL_SECONDS = 5.0


@click.command()
@cluster_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--dry-run", is_flag=True, help="List everything that would be deleted, change nothing."
)
@click.option(
    "--delete-home-volumes",
    is_flag=True,
    help="Also delete the users' home volumes (kept by default).",
)
@click.option(
    "--delete-backups",
    is_flag=True,
    help="Also delete the users' backup snapshots (kept by default; the policy always goes).",
)
@click.option(
    "--delete-shared-storage",
    is_flag=True,
    help="Also delete the shared folder: its EFS file system, mount targets and security "
    "group (kept by default, with its files).",
)
@aws_options()
def destroy(
    cluster: str,
    yes: bool,
    dry_run: bool,
    delete_home_volumes: bool,
    delete_backups: bool,
    delete_shared_storage: bool,
    region: str | None,
    aws_endpoint: str | None,
) -> None:
    """Delete CLUSTER: its instances, security groups, worker image and key pair.

    Only resources tagged for CLUSTER are touched. What cannot be deleted is
    listed with the reason at the end (exit 1); running it again retries.
    """
    ec2 = connect(cluster, region, aws_endpoint)
    try:
        plan = teardown.plan_destroy(ec2, delete_home_volumes)
        backups = Backups.connect(ec2, region, aws_endpoint)
        snapshots = [s["SnapshotId"] for s in backups.snapshots()]
    except CloudError as exc:
        raise cloud_error(exc) from exc
    try:
        policies = backups.policies()
    except CloudError as exc:  # an endpoint without DLM (an outside emulator)
        click.echo(f"backup policies not checked: {exc}", err=True)
        policies = []
    doomed = snapshots if delete_backups else []
    extra = [f"backup policy {p}" for p in policies] + [f"backup snapshot {s}" for s in doomed]
    shared = SharedTeardown.find(ec2, region, aws_endpoint, delete_shared_storage)
    extra += shared.plan_lines()
    if plan.empty and extra:
        click.echo(f"{'would' if dry_run else 'will'} delete in cluster {cluster}:")
    elif not show_plan(
        plan, cluster, "delete", f"nothing to delete for cluster {cluster}", dry_run
    ):
        return
    for line in extra:
        click.echo(f"  {line}")
    if snapshots and not delete_backups:
        click.echo(f"kept: {len(snapshots)} backup snapshot(s) (--delete-backups deletes them)")
    for line in shared.kept_lines():
        click.echo(line)
    if dry_run:
        return
    confirm(f"Delete all of the above for cluster {cluster}?", yes)
    failures = shared.before_groups()  # its group refers to the workers' group
    failures += teardown.destroy(ec2, plan, say, WAIT_TIMEOUT, POLL_SECONDS)
    failures += delete_policies(backups, policies)
    failures += delete_backup_snapshots(backups, doomed)
    report(failures)
