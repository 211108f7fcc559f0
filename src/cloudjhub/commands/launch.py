"""`cloudjhub launch` (and `launch_cluster/launch.py`): bring a cluster up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from ..config import ConfigError, InstanceConfig, error_line, load_instance_config

# (option, instance_config.json key, click type)
INSTANCE_OPTIONS: list[tuple[str, str, Any]] = [
    ("--manager-instance-type", "MANAGER_INSTANCE_TYPE", str),
    ("--worker-instance-type", "WORKER_INSTANCE_TYPE", str),
    ("--worker-ebs-size", "WORKER_EBS_SIZE", int),
    ("--user-home-ebs-size", "USER_HOME_EBS_SIZE", int),
    ("--jupyter-notebook-timeout", "JUPYTER_NOTEBOOK_TIMEOUT", int),
    ("--custom-worker-ami", "CUSTOM_WORKER_AMI", str),
    ("--server-username", "SERVER_USERNAME", str),
    ("--worker-username", "WORKER_USERNAME", str),
    ("--server-owner", "SERVER_OWNER", str),
    ("--hibernate/--no-hibernate", "HIBERNATE", bool),
]


def _env(option: str) -> str:
    return "CLOUDJHUB_" + option.split("/")[0].lstrip("-").replace("-", "_").upper()


def _instance_options(fn: Any) -> Any:
    for option, key, kind in reversed(INSTANCE_OPTIONS):
        if key not in InstanceConfig.model_fields:
            continue
        fn = click.option(
            option,
            key.lower(),
            type=kind if kind is not bool else None,
            default=None,
            envvar=_env(option),
            show_envvar=True,
            help=f"{key} of instance_config.json (overrides the file).",
        )(fn)
    return fn


@click.command()
@click.argument("cluster", envvar="CLOUDJHUB_CLUSTER")
@click.argument("base_ami", metavar="BASE_AMI", envvar="CLOUDJHUB_BASE_AMI")
@click.argument("private_subnet", metavar="PRIVATE_SUBNET", envvar="CLOUDJHUB_PRIVATE_SUBNET")
@click.argument("public_subnet", metavar="PUBLIC_SUBNET", envvar="CLOUDJHUB_PUBLIC_SUBNET")
@_instance_options
@click.option(
    "--instance-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("instance_config.json"),
    show_default=True,
    envvar="CLOUDJHUB_INSTANCE_CONFIG",
    show_envvar=True,
    help="Launch defaults file.",
)
@click.option(
    "--key-name",
    required=True,
    envvar="CLOUDJHUB_KEY_NAME",
    show_envvar=True,
    help="EC2 key pair the builder and manager are launched with.",
)
@click.option(
    "--key-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CLOUDJHUB_KEY_FILE",
    show_envvar=True,
    help="Private key of --key-name (mode 0600), used to reach builder and manager.",
)
@click.option(
    "--instance-profile",
    envvar="CLOUDJHUB_INSTANCE_PROFILE",
    show_envvar=True,
    help="IAM instance profile of the manager (see `cloudjhub iam-policy`).",
)
@click.option(
    "--admin-cidr",
    envvar="CLOUDJHUB_ADMIN_CIDR",
    show_envvar=True,
    help="Only this CIDR may SSH to the manager (none if not given).",
)
@click.option(
    "--ssh-port",
    type=int,
    default=22,
    show_default=True,
    envvar="CLOUDJHUB_SSH_PORT",
    show_envvar=True,
    help="SSH port of the instances.",
)
@click.option(
    "--hub-port",
    type=int,
    default=80,
    show_default=True,
    envvar="CLOUDJHUB_HUB_PORT",
    show_envvar=True,
    help="Port of the hub's public URL on the manager.",
)
@click.option(
    "--connect-via",
    type=click.Choice(["public", "private"]),
    default="public",
    show_default=True,
    envvar="CLOUDJHUB_CONNECT_VIA",
    show_envvar=True,
    help="Reach builder and manager at their public IP, or private IP (from inside the VPC).",
)
@click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CLOUDJHUB_KNOWN_HOSTS",
    show_envvar=True,
    help="Trust host keys from this known_hosts file instead of the EC2 console output.",
)
@click.option(
    "--ssl-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CLOUDJHUB_SSL_CERT",
    show_envvar=True,
    help="PEM certificate (with its chain) for the hub's public name: the hub then serves "
    "HTTPS. Use --hub-port 443 to also redirect port 80 to it.",
)
@click.option(
    "--ssl-key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CLOUDJHUB_SSL_KEY",
    show_envvar=True,
    help="Private key of --ssl-cert (mode 0600); sent to the manager over SSH only.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    envvar="CLOUDJHUB_OUTPUT_DIR",
    show_envvar=True,
    help="Where server_config.json and the record go.",
)
@click.option(
    "--region",
    envvar="CLOUDJHUB_REGION",
    show_envvar=True,
    default=None,
    help="AWS region [default: the boto3 chain, else REGION of instance_config.json].",
)
@click.option(
    "--aws-endpoint",
    metavar="URL",
    default=None,
    # AWS_ENDPOINT_URL is the variable boto3 itself reads.
    envvar=["CLOUDJHUB_AWS_ENDPOINT", "AWS_ENDPOINT_URL"],
    show_envvar=True,
    help="EC2-compatible endpoint [default: AWS_ENDPOINT_URL, else AWS].",
)
@click.option(
    "--timeout",
    type=float,
    default=1800,
    show_default=True,
    envvar="CLOUDJHUB_TIMEOUT",
    show_envvar=True,
    help="Seconds to wait for each long step.",
)
@click.option(
    "--dry-run", is_flag=True, help="Check everything, print what would be created, exit."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--keep-on-failure", is_flag=True, help="On failure, keep what this run created.")
def launch(
    cluster: str,
    base_ami: str,
    private_subnet: str,
    public_subnet: str,
    instance_config: Path,
    region: str | None,
    aws_endpoint: str | None,
    yes: bool,
    **kw: Any,
) -> None:
    """Create a cluster: security groups, worker image, manager running JupyterHub.

    Re-running with the same CLUSTER reuses what exists and finishes what is missing.
    """
    from ..aws.admin import AdminEc2
    from ..aws.client import CloudError, default_region
    from ..launch.cluster import Launch, LaunchError, plan
    from ..launch.options import LaunchOptions
    from ..launch.preflight import preflight
    from .cloud_options import confirm

    say = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        base = load_instance_config(instance_config)
        overrides = {
            key: kw.pop(key.lower())
            for _, key, _ in INSTANCE_OPTIONS
            if key.lower() in kw and kw[key.lower()] is not None
        }
        for _, key, _ in INSTANCE_OPTIONS:
            kw.pop(key.lower(), None)
        instance = InstanceConfig.model_validate({**base.model_dump(), **overrides})
        opts = LaunchOptions(
            cluster=cluster,
            base_ami=base_ami,
            private_subnet=private_subnet,
            public_subnet=public_subnet,
            instance=instance,
            region=region or default_region(instance.REGION),
            endpoint_url=aws_endpoint or None,
            **kw,
        )
    except (ValidationError, ConfigError, ValueError) as exc:
        message = error_line(exc) if isinstance(exc, ValidationError) else str(exc)
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    except CloudError as exc:
        _cloud_failure(exc)
    try:
        ec2 = AdminEc2.connect(opts.cluster, opts.region, opts.endpoint_url)
        problems = preflight(ec2, opts)
        if problems:
            for problem in problems:
                click.echo(f"error: {problem}", err=True)
            click.echo("nothing was created", err=True)
            sys.exit(2)
        steps = plan(ec2, opts)
    except CloudError as exc:
        _cloud_failure(exc)
    say(f"cluster {opts.cluster} in {opts.region}:")
    for line in steps:
        say(f"  {line}")
    if opts.dry_run:
        say("--dry-run: nothing was created")
        return
    confirm(f"Create these resources for cluster {opts.cluster}?", yes)
    try:
        result = Launch(ec2, opts, say).run()
    except LaunchError as exc:
        raise click.ClickException(f"launch of {opts.cluster} failed: {exc}") from exc
    say(f"launched {opts.cluster} in {result.seconds:.0f}s")
    say(f"  manager   {result.manager.id} ({result.manager.private_ip})")
    say(f"  image     {result.image_id}")
    say(f"  groups    {result.groups.manager} {result.groups.manager2} {result.groups.worker}")
    say(f"  config    {opts.server_config_file}")
    say(f"  record    {opts.record_file}")
    say("  passwords are on the manager, readable by root: /etc/cloudjhub/user_password")
    if not opts.tls:
        say(
            "  WARNING: the hub serves plain HTTP, so passwords and cookies cross the network "
            "in clear; relaunch with --ssl-cert/--ssl-key, or put a TLS load balancer in front"
        )
    click.echo(result.hub_url)


_CLOUD_HINTS = {
    "NoCredentialsError": " (set up AWS credentials: a profile, environment variables or SSO)",
    "NoRegionError": " (pass --region or set AWS_DEFAULT_REGION)",
    "EndpointConnectionError": " (check --aws-endpoint / AWS_ENDPOINT_URL and the network)",
}


def _cloud_failure(exc: Exception) -> NoReturn:
    """One line for an AWS failure before anything was created; exit 1."""
    hint = _CLOUD_HINTS.get(getattr(exc, "code", ""), "")
    click.echo(f"error: {exc}{hint}; nothing was created", err=True)
    sys.exit(1)
