"""`cloudjhub destroy CLUSTER`: delete everything tagged for the cluster, in order."""

from __future__ import annotations

import click

from ..aws.client import CloudError
from ..launch import teardown
from .cloud_options import aws_options, cluster_argument, confirm, connect, report, say, show_plan
from .errors import cloud_error

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
@aws_options()
def destroy(
    cluster: str,
    yes: bool,
    dry_run: bool,
    delete_home_volumes: bool,
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
    except CloudError as exc:
        raise cloud_error(exc) from exc
    if not show_plan(plan, cluster, "delete", f"nothing to delete for cluster {cluster}", dry_run):
        return
    confirm(f"Delete all of the above for cluster {cluster}?", yes)
    report(teardown.destroy(ec2, plan, say, WAIT_TIMEOUT, POLL_SECONDS))
