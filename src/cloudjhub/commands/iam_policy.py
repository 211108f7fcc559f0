"""`cloudjhub iam-policy CLUSTER`: the manager role's least-privilege policy, as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import click

from ..aws.client import CloudError
from ..aws.reach import check_region
from ..config import INSTANCE_CONFIG_FILE, ConfigError, InstanceConfig, load_instance_config
from ..launch.iam import BadInput, manager_policy, partition
from ..launch.iam_backups import backup_role_policy, launcher_backup_policy
from ..profile_policy import needs
from ..profiles import load_file, parse
from ..shared_folder import SHARED_STORAGE_KINDS
from .cloud_options import cluster_argument


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def add_profile_images(
    policy: dict[str, Any],
    part: str,
    region: str,
    images: Iterable[str],
    worker_amis: Iterable[str],
) -> None:
    """Let workers also launch from the profiles' own images (worker_ami), in a
    statement beside RunOnlyTheWorkerImage, which keeps the cluster's image."""
    extra = [ami for ami in images if ami not in worker_amis]
    if not extra:
        return
    statements = policy["Statement"]
    at = next(i for i, s in enumerate(statements) if s["Sid"] == "RunOnlyTheWorkerImage")
    statements.insert(
        at + 1,
        {
            "Sid": "RunTheProfilesOwnImages",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [f"arn:{part}:ec2:{region}::image/{ami}" for ami in extra],
        },
    )


def _launch_defaults(path: Path | None) -> InstanceConfig:
    """instance_config.json where the launcher reads it; a file named but missing is an error."""
    if path is not None and not path.is_file():
        _fail(f"--instance-config: no such file: {path}")
    try:
        return load_instance_config(path or INSTANCE_CONFIG_FILE)
    except ConfigError as exc:
        _fail(f"--instance-config: {exc}")


@click.command("iam-policy")
@cluster_argument
@click.option(
    "--region",
    default="*",
    show_default=True,
    help="Scope the policy's ARNs to this region.",
)
@click.option(
    "--account",
    metavar="ID",
    default="*",
    show_default=True,
    help="Scope the policy's ARNs to this 12-digit AWS account.",
)
@click.option(
    "--worker-ami",
    "worker_amis",
    metavar="AMI",
    multiple=True,
    help="Launch workers only from this image (repeatable) [default: CUSTOM_WORKER_AMI of "
    "the instance config, else images tagged cloudjhub:cluster=CLUSTER and "
    "cloudjhub:role=image, as the launcher tags the one it builds].",
)
@click.option(
    "--instance-type",
    "instance_types",
    metavar="TYPE",
    multiple=True,
    help="Launch workers only of this type; * and ? match any characters (repeatable) "
    "[default: WORKER_INSTANCE_TYPE of the instance config].",
)
@click.option(
    "--instance-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Launch defaults file [default: {INSTANCE_CONFIG_FILE} if present, else the "
    "built-in defaults].",
)
@click.option(
    "--kms-key-arn",
    metavar="ARN",
    default=None,
    help="Customer managed KMS key that encrypts the workers' EBS volumes (the account's "
    "default EBS key): adds the KMS permissions EBS needs to use it.",
)
@click.option(
    "--delete-home-volumes",
    is_flag=True,
    help="Allow deleting the cluster's home volumes, for a hub whose "
    "InstanceSpawner.delete_home_on_user_delete is True (deleting a user then deletes "
    "their files).",
)
@click.option(
    "--profiles",
    "profiles_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The hub's profiles (YAML or JSON, as `launch --profiles`): workers may also run "
    "as (and be resized to) every instance type they name, and launch from every image "
    "(worker_ami) they name besides the cluster's; spot statements are added if one may "
    "use market spot. A profile whose unlisted choice sets the type needs "
    "--instance-type for the types it allows.",
)
@click.option(
    "--shared-storage",
    metavar="KIND",
    type=click.Choice(SHARED_STORAGE_KINDS),
    default=None,
    help="The cluster was launched with --shared-storage KIND: the hub may pass the "
    "workers' role (CLUSTER-workers, which may only mount the shared folder) to the "
    "workers it launches (iam:PassRole on that role, to EC2 only).",
)
@click.option(
    "--backup-role",
    is_flag=True,
    help="Print instead the policy of a role for Data Lifecycle Manager (launch "
    "--backup-role ARN): snapshots of this cluster's volumes only; the role must trust "
    "dlm.amazonaws.com.",
)
@click.option(
    "--launcher-backups",
    is_flag=True,
    help="Print instead what the admin running `launch --backup-schedule` needs for the "
    "backup step: the account's DLM default role made if missing (that role only) and "
    "this cluster's lifecycle policy.",
)
def iam_policy(
    cluster: str,
    region: str,
    account: str,
    worker_amis: tuple[str, ...],
    instance_types: tuple[str, ...],
    instance_config: Path | None,
    kms_key_arn: str | None,
    delete_home_volumes: bool,
    profiles_file: Path | None,
    shared_storage: str | None,
    backup_role: bool,
    launcher_backups: bool,
) -> None:
    """Print the IAM policy the manager's instance role needs (terminating only the
    workers of deleted users; deleting home volumes only with --delete-home-volumes)."""
    if backup_role and launcher_backups:
        _fail("--backup-role and --launcher-backups: print one policy at a time")
    defaults = _launch_defaults(instance_config)
    if not worker_amis and defaults.CUSTOM_WORKER_AMI:
        worker_amis = (defaults.CUSTOM_WORKER_AMI,)
    types = instance_types or (defaults.WORKER_INSTANCE_TYPE,)
    spot = False
    images: tuple[str, ...] = ()
    if profiles_file is not None:
        try:
            asked = needs(parse(load_file(profiles_file)))
        except ValueError as exc:
            _fail(f"--profiles: {exc}")
        if asked.open_types and not instance_types:
            _fail(
                f"--profiles: {asked.open_types[0]} lets users name an instance type; "
                "give the types it allows with --instance-type"
            )
        if asked.open_images:
            _fail(
                f"--profiles: {asked.open_images[0]} lets users name an image, which a "
                "policy cannot follow; offer the images as choices"
            )
        types, spot, images = (*types, *asked.instance_types), asked.spot, asked.images
    try:
        policy = manager_policy(
            cluster,
            region,
            account=account,
            worker_amis=worker_amis,
            instance_types=types,
            kms_key_arn=kms_key_arn,
            delete_home_volumes=delete_home_volumes,
            spot=spot,
            shared_storage=shared_storage is not None,
        )
    except BadInput as exc:
        _fail(f"--{exc.name.replace('_', '-')}: {exc}")
    add_profile_images(policy, partition(region), region, images, worker_amis)
    if region != "*":  # well formed, so said; but is it one AWS has?
        try:
            check_region(region)
        except CloudError as exc:
            _fail(f"--region: {exc}")
    if backup_role:
        policy = backup_role_policy(cluster, partition(region), region, account)
    if launcher_backups:
        policy = launcher_backup_policy(cluster, partition(region), region, account)
    click.echo(json.dumps(policy, indent=2))
