"""`cloudjhub demo`."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from .backup_options import backup_options
from .cloud_options import require_reachable
from .errors import BadInput, CommandError
from .shared_options import checked as shared_checked
from .shared_options import demo_shared_options

DEMO_CLUSTER = "demo"  # local/demo.py's cluster: the course's default name


def _tell_passwords(passwords: tuple[str, str], state_dir: Path) -> None:
    """The sign-in passwords go to a terminal only, never into a log that captures
    the demo's output; then only the 0600 files that hold them are named."""
    from ..local.demo_secrets import ADMIN_PASSWORD_FILE, USER_PASSWORD_FILE

    admin, user = passwords
    if sys.stderr.isatty():
        click.echo(f"Sign in as admin with the password {admin}", err=True)
        click.echo(f"Sign in with any other name with the password {user}", err=True)
    else:
        click.echo(
            f"Sign in as admin with the password in {state_dir / ADMIN_PASSWORD_FILE}, "
            f"any other name with the one in {state_dir / USER_PASSWORD_FILE}",
            err=True,
        )


@click.command()
@click.option("--port", default=8000, show_default=True, help="Port of the hub's public URL.")
@click.option(
    "--idle-timeout",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds of inactivity before a server is culled and its instance stopped "
    "[default: JUPYTER_NOTEBOOK_TIMEOUT from server_config.json, else 3600].",
)
@click.option(
    "--api-token",
    envvar="CLOUDJHUB_DEMO_API_TOKEN",
    default=None,
    help="Register this token as an admin service token, for scripts driving the hub "
    "API. Prefer the CLOUDJHUB_DEMO_API_TOKEN variable: a command line is visible to "
    "every user of the machine.",
)
@click.option(
    "--aws-endpoint",
    metavar="URL",
    default=None,
    help="Use this EC2-compatible endpoint instead of starting moto.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".cloudjhub/demo"),
    show_default=True,
    help="Where instance roots, keys, logs and the hub database live.",
)
@click.option(
    "--vpc-cidr",
    default="127.0.0.0/16",
    show_default=True,
    help="Loopback /16 for the local VPC; give two demos on one machine different ones.",
)
@click.option(
    "--cloud-only",
    is_flag=True,
    help="Run only the local cloud (EC2 endpoint, fleet emulator, a prepared VPC, subnets, "
    "base image, key pair and instance profile) and print shell `export` lines for "
    "`launch_cluster/launch.py`; no hub.",
)
@click.option(
    "--hibernate",
    is_flag=True,
    help="Hibernate workers instead of stopping them (HIBERNATE in server_config.json): "
    "a stopped server's kernels are suspended and resume, variables and all, on restart.",
)
@click.option(
    "--like-aws",
    is_flag=True,
    help="Put an AWS behaviour layer in front of the EC2 endpoint: states take AWS-like "
    "time, the console shows host keys once per instance and Latest output only on Nitro "
    "types, private IPs are reused, API calls are throttled (RequestLimitExceeded).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="NAME[:RATE]",
    help="With --like-aws, answer AWS error NAME where AWS would, with probability RATE "
    "(default 1): InsufficientInstanceCapacity, DependencyViolation, InvalidSnapshot.InUse, "
    "IdempotentParameterMismatch, SpotMaxPriceTooLow, MaxSpotInstanceCountExceeded (spot "
    "launches only). InsufficientInstanceCapacity=TYPE, =SUBNET or =TYPE@SUBNET limits "
    "it to one type or subnet. Repeatable.",
)
@click.option(
    "--time-scale",
    metavar="F",
    default=None,
    help="With --like-aws, multiply every AWS-like delay by F (0.1 = ten times faster) "
    "[default: 1].",
)
@click.option(
    "--warm-pool-size",
    type=click.IntRange(min=0, max=1000),
    default=0,
    show_default=True,
    help="Keep this many launched, unassigned workers for first logins "
    "(c.InstanceSpawner.warm_pool_size).",
)
@click.option(
    "--user-home-ebs-size",
    type=click.IntRange(min=0, max=16384),
    default=0,
    show_default=True,
    help="A persistent home volume per user, GB (USER_HOME_EBS_SIZE); 0 for none.",
)
@backup_options
@demo_shared_options
@click.option(
    "--hub-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JupyterHub config file in traitlets' JSON form, merged after cloudjhub's own, "
    'e.g. {"JupyterHub": {"concurrent_spawn_limit": 300}, "InstanceSpawner": {"cmd": '
    '["python", "-m", "jupyterhub.tests.mocksu"]}}. Unknown traits are warned about in '
    "the hub's log and ignored.",
)
@click.option(
    "--ta-group",
    metavar="NAME",
    default=None,
    help="Teaching assistants' group: its members see, start, stop and open the servers "
    "of the students group (see README, Sign-in).",
)
@click.option(
    "--warm-pool-schedule",
    metavar="JSON",
    default=None,
    help="Windows when the pool has another size, as a JSON list of "
    '{"cron", "duration", "size", "state"} (c.InstanceSpawner.warm_pool_schedule).',
)
@click.option(
    "--warm-pool-time-zone",
    metavar="ZONE",
    default="UTC",
    show_default=True,
    help="IANA time zone of the schedule (c.InstanceSpawner.warm_pool_time_zone).",
)
@click.option(
    "--profiles",
    "profiles_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Profiles users pick from on the spawn page (c.InstanceSpawner.profile_list): a "
    "YAML or JSON file holding kubespawner's profile_list shape.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Your own JupyterHub config (Python), loaded after the demo's: it can set any "
    "trait, e.g. c.InstanceSpawner.profile_list as a callable. It runs as the hub, so "
    "give only a file you wrote.",
)
@click.option(
    "--named-servers",
    metavar="LIMIT",
    type=click.IntRange(min=0, max=1000),
    default=None,
    help="Let each user have named servers, each its own instance, at most LIMIT "
    "(0: no limit) (c.JupyterHub.allow_named_servers, named_server_limit_per_user).",
)
@click.option(
    "--home-volume-size",
    metavar="GB",
    type=click.IntRange(min=0, max=16384),
    default=0,
    show_default=True,
    help="Give each user (each named server) a persistent home volume of GB "
    "(c.InstanceSpawner.user_home_ebs_size); 0 for none.",
)
def demo(
    port: int,
    idle_timeout: int | None,
    api_token: str | None,
    aws_endpoint: str | None,
    state_dir: Path,
    vpc_cidr: str,
    cloud_only: bool,
    hibernate: bool,
    like_aws: bool,
    faults: tuple[str, ...],
    time_scale: str | None,
    warm_pool_size: int,
    user_home_ebs_size: int,
    backup_schedule: str | None,
    backup_retain: int,
    hub_config: Path | None,
    ta_group: str | None,
    warm_pool_schedule: str | None,
    warm_pool_time_zone: str,
    profiles_file: Path | None,
    config_file: Path | None,
    named_servers: int | None,
    home_volume_size: int,
    **shared_kw: Any,
) -> None:
    """Run cloudjhub on this machine: EC2 emulated on loopback, a real JupyterHub."""
    from ..aws.caller import name_caller
    from ..config import ConfigError, check_warm_pool_schedule, parse_json
    from ..hub.settings import read_jupyterhub_config
    from ..local.awslike.settings import BadSetting, behaviour_from
    from ..local.demo import DemoStack
    from ..profiles import load_file

    name_caller("demo")
    shared = shared_checked(shared_kw, DEMO_CLUSTER)
    if shared is not None and os.geteuid() != 0:
        raise BadInput(
            "--shared-storage: the local cloud's workers bind-mount the shared folder, "
            "which needs root; run the demo as root"
        )
    try:
        profiles = load_file(profiles_file) if profiles_file else None
    except ValueError as exc:
        raise BadInput(f"--profiles: {exc}") from None
    try:
        if (faults or time_scale is not None) and not like_aws:
            raise BadSetting("--fault and --time-scale only apply with --like-aws")
        behaviour = behaviour_from(faults, time_scale) if like_aws else None
        if ta_group is not None:
            from ..hub.signin_settings import check_name

            try:
                check_name(ta_group, "--ta-group")
            except ValueError as exc:
                raise BadSetting(str(exc)) from None
        extra_config = read_jupyterhub_config(hub_config) if hub_config else {}
        schedule = (
            parse_json(warm_pool_schedule.encode(), "--warm-pool-schedule")
            if warm_pool_schedule
            else []
        )
        check_warm_pool_schedule(schedule, warm_pool_time_zone)
    except ValueError as exc:  # BadSetting and ConfigError too
        known = isinstance(exc, (BadSetting, ConfigError))
        message = str(exc) if known else f"--hub-config {exc}"
        click.echo(f"cloudjhub demo: {message}", err=True)
        sys.exit(2)
    pool_traits = {"warm_pool_schedule": schedule, "warm_pool_time_zone": warm_pool_time_zone}

    # Whatever the demo and what it starts write is its owner's alone.
    os.umask(0o077)
    if aws_endpoint:  # before anything is made or started
        require_reachable(aws_endpoint, DemoStack.region)
    stack = DemoStack(
        state_dir=state_dir.resolve(),
        port=port,
        idle_timeout=idle_timeout,
        api_token=api_token,
        aws_endpoint=aws_endpoint,
        vpc_cidr=vpc_cidr,
        say=lambda m: click.echo(m, err=True),
        hibernate=hibernate,
        like_aws=behaviour,
        warm_pool_size=warm_pool_size,
        user_home_ebs_size=user_home_ebs_size,
        backup_schedule=backup_schedule,
        backup_retain=backup_retain,
        shared=shared,
        hub_config=extra_config,
        ta_group=ta_group,
        named_servers=named_servers,
        spawner_config={
            **({"profile_list": profiles} if profiles else {}),
            **(pool_traits if schedule else {}),
            **({"user_home_ebs_size": home_volume_size} if home_volume_size else {}),
        },
        extra_config=config_file,
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if cloud_only:
            click.echo("Starting the local cloud...", err=True)
            stack.start_cloud()
            for name, value in stack.exports().items():
                click.echo(f"export {name}={shlex.quote(value)}")
            click.echo("# the local cloud runs until this command is stopped (Ctrl-C)")
            sys.stdout.flush()
            stopping.wait()
            return
        click.echo("Starting the local cloud and JupyterHub...", err=True)
        stack.start()
        click.echo(f"cloudjhub demo is running: {stack.hub_url}")
        _tell_passwords(stack.passwords, stack.state_dir)
        click.echo("Ctrl-C stops everything.", err=True)
        sys.stdout.flush()
        while not stopping.wait(0.5):
            if stack.hub is not None and stack.hub.poll() is not None:
                # As systemd restarts the hub on a manager: servers keep running and
                # the new hub adopts them.
                status = stack.hub.returncode
                log = stack.state_dir / "jupyterhub.log"
                if not stack.may_restart_hub():
                    raise CommandError(
                        f"JupyterHub exited with status {status} and keeps dying; see {log}"
                    )
                click.echo(
                    f"JupyterHub exited unexpectedly with status {status}; restarting it "
                    f"(running servers are kept; see {log})",
                    err=True,
                )
                stack.restart_hub()
                click.echo(f"JupyterHub restarted: {stack.hub_url}", err=True)
    except (RuntimeError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    finally:
        click.echo("Stopping...", err=True)
        stack.stop()
        click.echo("Stopped.", err=True)
