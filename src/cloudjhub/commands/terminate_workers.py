"""`cloudjhub terminate-workers CLUSTER`: the original `terminate_all_workers`, guarded."""

from __future__ import annotations

import click

from ..aws.client import CloudError
from ..launch import teardown
from ..tags import Role
from .cloud_options import aws_options, cluster_argument, confirm, connect, report, say, show_plan
from .errors import cloud_error

WAIT_TIMEOUT = 900.0
POLL_SECONDS = 5.0


@click.command("terminate-workers")
@cluster_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="List what would be terminated, change nothing.")
@click.option(
    "--delete-home-volumes",
    is_flag=True,
    help="Also delete the users' home volumes (kept by default), once detached.",
)
@aws_options()
def terminate_workers(
    cluster: str,
    yes: bool,
    dry_run: bool,
    delete_home_volumes: bool,
    region: str | None,
    aws_endpoint: str | None,
) -> None:
    """Terminate every worker instance of CLUSTER (only instances tagged as its workers)."""
    ec2 = connect(cluster, region, aws_endpoint)
    try:
        plan = teardown.plan_terminate_workers(ec2, delete_home_volumes)
    except CloudError as exc:
        raise cloud_error(exc) from exc
    if not show_plan(plan, cluster, "terminate", f"no workers in cluster {cluster}", dry_run):
        return
    homes = f" and delete {len(plan.home_volumes)} home volume(s)" if plan.home_volumes else ""
    confirm(f"Terminate {len(plan.instances)} worker(s){homes} of cluster {cluster}?", yes)
    failures = teardown.terminate(
        ec2, plan.instances, [Role.WORKER], say, WAIT_TIMEOUT, POLL_SECONDS
    )
    if not failures:
        failures = teardown.delete_home_volumes(
            ec2, plan.home_volumes, say, WAIT_TIMEOUT, POLL_SECONDS
        )
    report(failures)
