"""`cloudjhub launch` (and `launch_cluster/launch.py`): bring a cluster up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ..config import (
    INSTANCE_CONFIG_FILE,
    ConfigError,
    InstanceConfig,
    error_line,
    load_instance_config,
)
from ..launch.signin import AUTHENTICATORS
from .backup_options import backup_options
from .cloud_options import aws_options
from .errors import BadInput, CommandError, cloud_error
from .options import ExistingFile, Number, env_argument, env_option
from .shared_options import checked as shared_checked
from .shared_options import shared_options
from .signin_options import signin_from, signin_options
from .tls_pair import tls_pair_problem

# Every failure before the first resource is made says so.
NOTHING_CREATED = "; nothing was created"


# (option, instance_config.json key, click type)
class SubnetList(click.ParamType):
    """Comma-separated subnet ids (the workers' private subnets, in order)."""

    name = "SUBNET[,SUBNET...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        return [part.strip() for part in str(value).split(",") if part.strip()]


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
    ("--gpu-image/--no-gpu-image", "GPU_IMAGE", bool),
    ("--warm-pool-size", "WARM_POOL_SIZE", int),
    ("--private-subnets", "SUBNET_IDS", SubnetList()),
]


def _instance_options(fn: Any) -> Any:
    for option, key, kind in reversed(INSTANCE_OPTIONS):
        if key not in InstanceConfig.model_fields:
            continue
        fn = env_option(
            option,
            key.lower(),
            type=kind if kind is not bool else None,
            default=None,
            help=f"{key} of instance_config.json (overrides the file).",
        )(fn)
    return fn


AUTHENTICATOR_HELP = (
    "How users sign in. native (default): JupyterHub's NativeAuthenticator; each user "
    "signs up with a password of their own and can sign in once an admin approves the "
    "account (at /hub/authorize); `admin`'s password is generated and written to "
    "cloudjhub-CLUSTER-admin-password here. shared-password: one class password for "
    "everyone; whoever knows it can sign in as ANY user, other users included, and "
    "read or change their files: only for a workshop where that does not matter. "
    "github, google, generic-oauth (any OpenID Connect provider), lti13 (a course in an "
    "LMS): the school's accounts, with --client-id and --client-secret-file (see README, "
    "Sign-in)."
)


def authenticator_option(fn: Any) -> Any:
    """`--authenticator`, shared by `launch` and `setup-manager`; an unknown name is
    one line and exit 2, before anything is done."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        from ..launch.options import authenticator_named

        try:
            return authenticator_named(value)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc

    return env_option(
        "--authenticator",
        default="native",
        show_default=True,
        metavar="|".join(AUTHENTICATORS),
        callback=check,
        help=AUTHENTICATOR_HELP,
    )(fn)


def _instance_config(path: Path | None, given: dict[str, Any]) -> InstanceConfig:
    """instance_config.json (the named one, else ./ if present) with the instance
    options that were given laid over it."""
    overrides = {key: given[key.lower()] for _, key, _ in INSTANCE_OPTIONS}
    chosen = {key: value for key, value in overrides.items() if value is not None}
    file = load_instance_config(path or INSTANCE_CONFIG_FILE)
    return InstanceConfig.model_validate({**file.model_dump(), **chosen})


@click.command()
@env_argument("cluster")
@env_argument("base_ami", metavar="BASE_AMI")
@env_argument("private_subnet", metavar="PRIVATE_SUBNET")
@env_argument("public_subnet", metavar="PUBLIC_SUBNET")
@_instance_options
@env_option(
    "--instance-config",
    type=ExistingFile(),
    default=None,
    help=f"Launch defaults file [default: {INSTANCE_CONFIG_FILE} if present].",
)
@env_option(
    "--key-name",
    required=True,
    help="EC2 key pair the builder and manager are launched with.",
)
@env_option(
    "--key-file",
    required=True,
    type=ExistingFile(),
    help="Private key of --key-name (mode 0600), used to reach builder and manager.",
)
@env_option(
    "--instance-profile",
    help="IAM instance profile of the manager (see `cloudjhub iam-policy`).",
)
@env_option(
    "--admin-cidr",
    help="Only this CIDR may SSH to the manager (none if not given).",
)
@env_option(
    "--ssh-port",
    type=int,
    default=22,
    show_default=True,
    help="SSH port of the instances.",
)
@env_option(
    "--hub-port",
    type=int,
    default=80,
    show_default=True,
    help="Port of the hub's public URL on the manager.",
)
@env_option(
    "--connect-via",
    type=click.Choice(["public", "private"]),
    default="public",
    show_default=True,
    help="Reach builder and manager at their public IP, or private IP (from inside the VPC).",
)
@env_option(
    "--known-hosts",
    type=ExistingFile(),
    help="Trust host keys from this known_hosts file instead of the EC2 console output.",
)
@env_option(
    "--ssl-cert",
    type=ExistingFile(),
    help="PEM certificate (with its chain) for the hub's public name: the hub then serves "
    "HTTPS. Use --hub-port 443 to also redirect port 80 to it.",
)
@env_option(
    "--ssl-key",
    type=ExistingFile(),
    help="Private key of --ssl-cert (mode 0600); sent to the manager over SSH only.",
)
@click.option(
    "--allow-http",
    is_flag=True,
    help="Without --ssl-cert/--ssl-key, serve plain HTTP anyway: passwords and cookies "
    "then cross the network in clear. Only behind a TLS load balancer, or for a rehearsal.",
)
@authenticator_option
@signin_options
@backup_options
@shared_options
@env_option(
    "--backup-role",
    metavar="ARN",
    default=None,
    help="The IAM role DLM takes snapshots with [default: the account's "
    "AWSDataLifecycleManagerDefaultRole]; `cloudjhub iam-policy CLUSTER --backup-role` "
    "prints a least-privilege policy for one of your own.",
)
@env_option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    help="Where server_config.json and the record go.",
)
@aws_options(region_fallback="REGION of instance_config.json")
@env_option(
    "--timeout",
    type=Number(min=0, min_open=True),
    default=1800,
    show_default=True,
    help="Seconds to wait for each long step.",
)
@click.option(
    "--dry-run", is_flag=True, help="Check everything, print what would be created, exit."
)
@env_option(
    "--profiles",
    type=ExistingFile(),
    default=None,
    help="Profiles users pick from on the spawn page (c.InstanceSpawner.profile_list): a "
    "YAML or JSON file in kubespawner's profile_list shape. Allow their types in the hub's "
    "IAM policy (cloudjhub iam-policy --instance-type).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--keep-on-failure", is_flag=True, help="On failure, keep what this run created.")
def launch(
    cluster: str,
    base_ami: str,
    private_subnet: str,
    public_subnet: str,
    instance_config: Path | None,
    region: str | None,
    aws_endpoint: str | None,
    yes: bool,
    allow_http: bool,
    **kw: Any,
) -> None:
    """Create a cluster: security groups, worker image, manager running JupyterHub.

    Re-running with the same CLUSTER reuses what exists and finishes what is missing.
    """
    from ..aws.client import CloudError, default_region
    from ..launch.cluster import Launch, LaunchError, plan
    from ..launch.options import LaunchOptions
    from ..launch.preflight import preflight
    from ..profiles import load_file as load_profiles
    from .cloud_options import confirm, connect

    say = lambda m: click.echo(m, err=True)  # noqa: E731
    given = {key.lower(): kw.pop(key.lower(), None) for _, key, _ in INSTANCE_OPTIONS}
    signin = signin_from(kw["authenticator"], kw)
    kw["shared"] = shared_checked(kw, cluster, NOTHING_CREATED)
    profiles_file = kw.pop("profiles")
    try:
        kw["profiles"] = load_profiles(profiles_file) if profiles_file else None
    except ValueError as exc:
        raise BadInput(f"--profiles: {exc}") from None
    try:
        instance = _instance_config(instance_config, given)
        opts = LaunchOptions(
            signin=signin,
            cluster=cluster,
            base_ami=base_ami,
            private_subnet=private_subnet,
            public_subnet=public_subnet,
            instance=instance,
            region=region or default_region(instance.REGION),
            endpoint_url=aws_endpoint or None,
            **kw,
        )
    except ValidationError as exc:
        raise BadInput(error_line(exc)) from exc
    except (ConfigError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    except CloudError as exc:
        raise cloud_error(exc, NOTHING_CREATED) from exc
    if not opts.tls and not allow_http:
        raise BadInput(
            "no --ssl-cert/--ssl-key: the hub would serve plain HTTP, passwords and cookies "
            "in clear; give them, or --allow-http (behind a TLS load balancer)" + NOTHING_CREATED
        )
    if (
        opts.ssl_cert
        and opts.ssl_key
        and (problem := tls_pair_problem(opts.ssl_cert, opts.ssl_key))
    ):
        raise BadInput(problem + NOTHING_CREATED)
    ec2 = connect(opts.cluster, opts.region, opts.endpoint_url, then=NOTHING_CREATED)
    try:
        problems = preflight(ec2, opts)
        steps = [] if problems else plan(ec2, opts)
    except CloudError as exc:
        raise cloud_error(exc, NOTHING_CREATED) from exc
    if problems:  # every one of them, then the verdict
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        click.echo("nothing was created", err=True)
        raise click.exceptions.Exit(BadInput.exit_code)
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
        raise CommandError(f"launch of {opts.cluster} failed: {exc}") from exc
    say(f"launched {opts.cluster} in {result.seconds:.0f}s")
    say(f"  manager   {result.manager.id} ({result.manager.private_ip})")
    say(f"  image     {result.image_id}")
    say(f"  groups    {result.groups.manager} {result.groups.manager2} {result.groups.worker}")
    say(f"  config    {opts.server_config_file}")
    say(f"  record    {opts.record_file}")
    say(f"  sign-in   {opts.authenticator}")
    if opts.shared is not None:
        say(f"  shared    /srv/shared on every worker, course {opts.shared.course}")
    if result.callback_url:
        say(f"  callback  {result.callback_url} (register it with the provider)")
    if not opts.sign_in.external:
        say(f"  admin     user admin, password in {opts.admin_password_file} (mode 0600)")
    if opts.sign_in.admin_users:
        say(f"  admins    {', '.join(opts.sign_in.admin_users)}")
    if opts.sign_in.external and not (opts.sign_in.allowed_users or opts.sign_in.allowed_groups):
        say(
            "  WARNING: no --allowed-users or --allowed-groups: every account of the provider may sign in"
        )
    if opts.authenticator == "shared-password":
        say("  the class password is on the manager, root only: /etc/cloudjhub/user_password")
    if not opts.tls:
        say(
            "  WARNING: the hub serves plain HTTP, so passwords and cookies cross the network "
            "in clear; relaunch with --ssl-cert/--ssl-key, or put a TLS load balancer in front"
        )
    click.echo(result.hub_url)
