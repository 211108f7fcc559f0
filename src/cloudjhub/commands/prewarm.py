"""`cloudjhub prewarm CLUSTER --size N`: a one-off warm-pool window, for an exam that
is not on the schedule.

The window is a tag on the cluster's manager instance (`cloudjhub:prewarm`,
`size=N,state=S,until=<ISO UTC>`), which the hub's pool keeper reads every round:
so it works from an admin's machine and from the manager itself, with no hub
restart, and ends on its own once `until` has passed.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import click

from ..aws.client import CloudError
from ..aws.hub import HubEc2
from ..pool_schedule import MAX_WINDOW_SECONDS, OneOff
from .cloud_options import aws_options, cluster_argument, connect_as
from .errors import BadInput, CommandError, cloud_error
from .pool_options import pool_size_option, pool_state_option


@click.command("prewarm")
@cluster_argument
@pool_size_option("Pool workers to keep while the window is open; 0 ends an earlier prewarm.")
@pool_state_option("Keep them stopped (disks only) or running (compute: the fastest login).")
@click.option(
    "--for",
    "seconds",
    type=click.IntRange(1, MAX_WINDOW_SECONDS),
    default=3600,
    show_default=True,
    metavar="SECONDS",
    help="How long the window stays open, from now.",
)
@click.option("--cancel", is_flag=True, help="End an earlier prewarm now (as --size 0).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@aws_options()
def prewarm(
    cluster: str,
    size: int | None,
    state: str,
    seconds: int,
    cancel: bool,
    as_json: bool,
    region: str | None,
    aws_endpoint: str | None,
) -> None:
    """Keep a warm pool of --size workers in CLUSTER for --for seconds from now.

    Like a window of InstanceSpawner.warm_pool_schedule: while windows overlap the
    largest size wins. Needs the hub's pool keeper (`cloudjhub warm-pool`, which
    every cloudjhub hub runs) and a manager instance to hold the tag.
    """
    if cancel and size not in (None, 0):
        raise BadInput("--cancel and --size N: pick one (--cancel is --size 0)")
    if size is None and not cancel:
        raise BadInput("--size is required (0-1000), or --cancel")
    ending = cancel or size == 0
    ec2 = connect_as(HubEc2, cluster, region, aws_endpoint)
    until = datetime.fromtimestamp(time.time(), UTC) + timedelta(seconds=seconds)
    window = None if ending else OneOff(size or 0, state, until.replace(microsecond=0))
    try:
        managers = ec2.managers()
        if not managers:
            raise CommandError(
                f"cluster {cluster} has no manager instance to hold the prewarm tag "
                "(the demo has none: set warm_pool_size instead)"
            )
        for manager in managers:
            ec2.set_prewarm(manager.id, None if window is None else window.tag_value())
    except CloudError as exc:
        raise cloud_error(exc) from exc
    ids = [m.id for m in managers]
    if as_json:
        result = {
            "cluster": cluster,
            "managers": ids,
            "prewarm": None
            if window is None
            else {"size": window.size, "state": window.state, "until": window.until_utc},
        }
        click.echo(json.dumps(result, indent=2))
    elif window is None:
        click.echo(f"prewarm of cluster {cluster} ended (manager {', '.join(ids)})")
    else:
        click.echo(
            f"cluster {cluster}: a warm pool of {window.size} {window.state} worker(s) until "
            f"{window.until_utc} (tag on manager {', '.join(ids)}); the hub's pool "
            "keeper acts on it within a round"
        )
