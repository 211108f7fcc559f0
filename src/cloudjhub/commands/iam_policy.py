"""`cloudjhub iam-policy CLUSTER`: the manager role's least-privilege policy, as JSON."""

from __future__ import annotations

import json

import click

from ..launch.iam import manager_policy
from .cloud_options import cluster_argument


@click.command("iam-policy")
@cluster_argument
@click.option(
    "--region",
    default="*",
    show_default=True,
    help="Scope the policy's resource ARNs to this region.",
)
def iam_policy(cluster: str, region: str) -> None:
    """Print the IAM policy the manager's instance role needs (no terminate, no delete)."""
    click.echo(json.dumps(manager_policy(cluster, region), indent=2))
