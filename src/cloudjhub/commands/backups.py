"""`cloudjhub backups CLUSTER USER` lists a user's snapshots; `cloudjhub restore
CLUSTER USER SNAPSHOT` records a restore that the hub performs at their next start."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from ..aws.backups import NO_HOME, Backups
from ..aws.client import CloudError, NotOurs
from ..tags import RESTORE_TAG, tag_dict
from .backup_options import server_option
from .cloud_options import aws_options, cluster_argument, connect
from .errors import BadInput, cloud_error

COLUMNS = ("SNAPSHOT", "TIME", "SIZE", "VOLUME", "STATE")


def connect_backups(cluster: str, region: str | None, aws_endpoint: str | None) -> Backups:
    ec2 = connect(cluster, region, aws_endpoint)
    try:
        return Backups.connect(ec2, region, aws_endpoint)
    except CloudError as exc:
        raise cloud_error(exc) from exc


def snapshot_row(snapshot: dict[str, Any]) -> dict[str, Any]:
    start = snapshot.get("StartTime")
    return {
        "snapshot_id": snapshot["SnapshotId"],
        "time": start.isoformat() if isinstance(start, datetime) else start,
        "size_gb": snapshot.get("VolumeSize"),
        "volume_id": snapshot.get("VolumeId"),
        "state": snapshot.get("State"),
    }


@click.command()
@cluster_argument
@click.argument("user")
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@aws_options()
def backups(
    cluster: str,
    user: str,
    server: str,
    as_json: bool,
    region: str | None,
    aws_endpoint: str | None,
) -> None:
    """List USER's backup snapshots in CLUSTER: time, size and volume, oldest first."""
    store = connect_backups(cluster, region, aws_endpoint)
    try:
        rows = [snapshot_row(s) for s in store.snapshots(user, server)]
    except CloudError as exc:
        raise cloud_error(exc) from exc
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no backups of {user} in cluster {cluster}")
        return
    click.echo("  ".join(COLUMNS))
    for r in rows:
        size = f"{r['size_gb']} GB"
        click.echo(f"{r['snapshot_id']}  {r['time']}  {size}  {r['volume_id']}  {r['state']}")


@click.command()
@cluster_argument
@click.argument("user")
@click.argument("snapshot")
@click.option(
    "--as-folder",
    is_flag=True,
    help="Attach the restored volume read-only at ~/restored-<date> instead of replacing "
    "the home, for their next session only.",
)
@server_option
@click.option("--dry-run", is_flag=True, help="Check and say what would happen; change nothing.")
@aws_options()
def restore(
    cluster: str,
    user: str,
    snapshot: str,
    as_folder: bool,
    server: str,
    dry_run: bool,
    region: str | None,
    aws_endpoint: str | None,
) -> None:
    """At USER's next start, restore their home from SNAPSHOT.

    Without --as-folder the home volume is replaced by one made from the snapshot;
    the current one is kept, tagged cloudjhub:replaced, until you delete it.
    """
    store = connect_backups(cluster, region, aws_endpoint)
    try:
        found = store.users_snapshot(user, snapshot, server)
        volume = store.home_volume(user, server)
    except NotOurs as exc:
        raise BadInput(f"SNAPSHOT {snapshot}: {exc}") from exc
    except CloudError as exc:
        if exc.code == NO_HOME:
            raise BadInput(f"USER {user}: {exc}") from exc
        raise cloud_error(exc) from exc
    pending = tag_dict(volume.get("Tags")).get(RESTORE_TAG)
    how = "as a read-only folder" if as_folder else "replacing the home volume"
    what = f"{snapshot} ({found.get('StartTime')}) {how}, at {user}'s next start"
    if dry_run:
        click.echo(f"would restore {what}")
        return
    try:
        store.request_restore(volume["VolumeId"], snapshot, as_folder)
    except CloudError as exc:
        raise cloud_error(exc) from exc
    if pending:
        click.echo(f"replaced the pending restore ({pending})", err=True)
    click.echo(f"will restore {what}")
