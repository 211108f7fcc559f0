"""`cloudjhub resize-home CLUSTER USER SIZE_GB`: grow a user's home volume in place."""

from __future__ import annotations

import click

from ..aws.backups import NO_HOME
from ..aws.client import CloudError
from .backup_options import server_option
from .backups import connect_backups
from .cloud_options import aws_options, cluster_argument
from .errors import BadInput, CommandError, cloud_error

# EBS gp3: 1-16384 GiB (Amazon EBS User Guide, "Amazon EBS volume types").
MAX_SIZE_GB = 16384
# ModifyVolume while the volume's last modification is not yet completed, or past
# the volume's modifications per period (EC2 API Reference, ModifyVolume: "wait for
# that modification to reach the completed state"; up to four in 24 hours).
STILL_MODIFYING = frozenset({"IncorrectModificationState", "VolumeModificationRateExceeded"})


@click.command("resize-home")
@cluster_argument
@click.argument("user")
@click.argument("size_gb", type=click.IntRange(1, MAX_SIZE_GB))
@server_option
@click.option("--dry-run", is_flag=True, help="Check and say what would happen; change nothing.")
@aws_options()
def resize_home(
    cluster: str,
    user: str,
    size_gb: int,
    server: str,
    dry_run: bool,
    region: str | None,
    aws_endpoint: str | None,
) -> None:
    """Grow USER's home volume to SIZE_GB; the file system grows at their next start.

    EBS volumes only grow, so a size not larger than today's is refused.
    """
    store = connect_backups(cluster, region, aws_endpoint)
    try:
        volume = store.home_volume(user, server)
    except CloudError as exc:
        if exc.code == NO_HOME:
            raise BadInput(f"USER {user}: {exc}") from exc
        raise cloud_error(exc) from exc
    now = int(volume["Size"])
    if size_gb <= now:
        raise BadInput(
            f"SIZE_GB {size_gb}: {user}'s home volume {volume['VolumeId']} is {now} GB "
            "today; it can only grow (EBS volumes cannot shrink)"
        )
    if dry_run:
        click.echo(f"would grow {volume['VolumeId']} from {now} to {size_gb} GB")
        return
    try:
        store.grow(volume["VolumeId"], size_gb)
    except CloudError as exc:
        if exc.code in STILL_MODIFYING:
            raise CommandError(
                f"{volume['VolumeId']} is still being modified or was modified too often "
                f"lately (AWS: {exc.code}); run resize-home again later; nothing was changed"
            ) from exc
        raise cloud_error(exc) from exc
    click.echo(
        f"grew {volume['VolumeId']} from {now} to {size_gb} GB; "
        f"the file system grows at {user}'s next start"
    )
