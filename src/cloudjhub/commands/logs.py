"""`cloudjhub logs CLUSTER USER`: a user's Jupyter (or agent) log, from their instance.

It runs where the hub's worker key and host-key store are (the manager, or the
demo's machine; `hub.json` says where they are), over the same verified SSH path
as the hub: the instance is found by its tags, its host keys come from the hub's
store (by instance id, never by IP), and `cloudjhub-worker log` prints the log.
A stopped instance has no one to ask: the tail the hub kept at its last stop or
failed spawn is printed instead (kept_logs). From an admin's machine,
`--via-manager` runs this same command on the manager (via_manager).
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import click

from .. import remote
from ..aws.client import CloudError, Instance
from ..aws.hub import HubEc2
from ..config import ConfigError, load_server_config
from ..host_keys import HOST_KEY_STORE, HostKeyStore
from ..hub.settings import HubSettings, load_settings, settings_path
from ..kept_logs import KeptLogs, KeptTail, default_dir
from ..tags import SERVER_TAG, validate_server_name
from ..worker.protocol import MAX_LOG_LINES, posix_username
from .cloud_options import aws_options, cluster_argument, connect_as, say
from .errors import BadInput, CommandError, cloud_error
from .options import ExistingFile, env_option
from .via_manager import logs_via_manager, manager_options

# JupyterHub's names are the hub's, not ours to narrow much: no control characters,
# no whitespace, no "/", bounded.
USER_NAME_RE = re.compile(r"^[^\s/\x00-\x1f\x7f]{1,255}$")
WORKER_LOG_TIMEOUT = 60.0


def check_user(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not USER_NAME_RE.fullmatch(value):
        raise click.BadParameter(
            "a JupyterHub user name: 1-255 characters, no whitespace, '/' or control characters"
        )
    return value


def check_optional_user(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    return None if value is None else check_user(ctx, param, value)


hub_settings_option = env_option(
    "--hub-settings",
    type=ExistingFile(),
    default=None,
    help="On the manager: the hub's settings "
    f"[default: $CLOUDJHUB_HUB_SETTINGS, else {settings_path({})}].",
)


def check_server(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            validate_server_name(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        if not value:
            raise click.BadParameter("a server name, not empty (omit --server for the default)")
    return value


@dataclass(frozen=True)
class HubSide:
    """What the hub uses to reach workers, as this manager's hub.json says."""

    cluster: str
    region: str
    endpoint: str | None
    ssh_username: str
    ssh_key_file: str
    ssh_port: int
    worker_command: list[str]
    host_key_store: str
    kept_logs_dir: str

    @classmethod
    def load(cls, path: Path) -> HubSide:
        if not path.is_file():
            raise BadInput(
                f"--hub-settings: no such file: {path} (run this on the manager, "
                "or from your machine with --via-manager)"
            )
        try:
            settings: HubSettings = load_settings(path)
            config = load_server_config(settings.spawner.server_config_file)
        except ConfigError as exc:
            raise BadInput(f"--hub-settings: {exc}") from exc
        traits = settings.spawner.traits

        def trait(name: str, fallback: object) -> object:
            return traits.get(name, fallback)

        return cls(
            cluster=config.CLUSTER_NAME,
            region=config.REGION,
            endpoint=config.AWS_ENDPOINT_URL or None,
            ssh_username=str(trait("ssh_username", config.WORKER_USERNAME)),
            ssh_key_file=str(trait("ssh_key_file", config.SSH_KEY_FILE)),
            ssh_port=int(str(trait("ssh_port", config.SSH_PORT))),
            worker_command=list(settings.spawner.worker_command),
            host_key_store=settings.spawner.host_key_store or HOST_KEY_STORE,
            kept_logs_dir=str(trait("kept_logs_dir", default_dir(settings.spawner.usage_log))),
        )


def server_of(instance: Instance) -> str:
    return instance.tags.get(SERVER_TAG, "")


def choose(instances: list[Instance]) -> Instance | None:
    """The instance the hub would use: a live one (running first), else the newest."""
    if not instances:
        return None
    live = [i for i in instances if i.live]
    pool = live or instances
    return max(pool, key=lambda i: (i.state == "running", i.launched_at, i.id))


def print_kept(kept: KeptTail | None, what: str) -> None:
    """The hub's kept tail; exit 1 when there is none (nothing to show is no bad input)."""
    if kept is None:
        raise CommandError(f"{what}, and the hub kept no log of it")
    say(f"{what}; {kept.heading()}")
    for line in kept.lines:
        click.echo(line)


def read_kept(hub: HubSide, user: str, server: str) -> KeptTail | None:
    try:
        return KeptLogs(hub.kept_logs_dir).read(user, server)
    except ConfigError as exc:
        raise CommandError(f"cannot read what the hub kept: {exc}") from exc


def last_failed_spawn(cluster: str, user: str, hub_settings: Path) -> KeptTail | None:
    """For `status USER`: the failed spawn the hub kept, when run on this cluster's
    manager (elsewhere there is no hub.json, and nothing to read)."""
    if not hub_settings.is_file():
        return None
    hub = HubSide.load(hub_settings)
    if hub.cluster != cluster:
        return None
    kept = read_kept(hub, user, "")
    return kept if kept is not None and kept.event == "failed-spawn" else None


def run_worker_log(
    hub: HubSide, inst: Instance, user: str, lines: int, follow: bool, agent: bool
) -> None:
    """`cloudjhub-worker log` on the instance, over the hub's pinned SSH."""
    assert inst.private_ip
    try:
        keys = HostKeyStore(hub.host_key_store).keys_for(inst.id)
    except ConfigError as exc:
        raise CommandError(f"cannot read the hub's host key store: {exc}") from exc
    if not keys:
        raise CommandError(
            f"{inst.id} has no pinned host key in {hub.host_key_store}: the hub has not "
            "connected to it yet, so it has no log to show"
        )
    target = remote.Target(
        inst.private_ip, hub.ssh_port, hub.ssh_username, hub.ssh_key_file, tuple(keys)
    )
    argv = [*hub.worker_command, "log", "--user", posix_username(user), "--lines", str(lines)]
    argv += ["--agent"] if agent else []
    try:
        if follow:
            status = stream(target, [*argv, "--follow"])
            stderr = ""
        else:
            result = remote.run_on(target, argv, b"", WORKER_LOG_TIMEOUT)
            status, stderr = result.status, result.stderr
            click.echo(result.stdout, nl=False)
    except (remote.RemoteError, TimeoutError) as exc:
        raise CommandError(f"cannot read the log on {inst.id}: {exc}") from exc
    if status != 0:
        raise CommandError(f"cloudjhub-worker on {inst.id} failed: {stderr.strip()[-500:]}")
    if not follow and not result.stdout:
        which = "agent's" if agent else "Jupyter"
        raise CommandError(f"{inst.id} runs, but its {which} log is empty: no server ran there yet")


def writer(out: BinaryIO) -> Callable[[bytes], None]:
    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    return write


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stream(target: remote.Target, argv: list[str]) -> int:
    """Follow until the command ends, Ctrl-C or a terminate: either closes the SSH
    session, so the follower on the instance stops too."""
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return remote.stream_on(target, argv, writer(sys.stdout.buffer), writer(sys.stderr.buffer))
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, before)


def show_logs(
    cluster: str,
    user: str,
    server: str,
    lines: int,
    follow: bool,
    agent: bool,
    region: str | None,
    aws_endpoint: str | None,
    hub_settings: Path,
) -> None:
    hub = HubSide.load(hub_settings)
    if hub.cluster != cluster:
        raise BadInput(f"CLUSTER: this hub runs cluster {hub.cluster!r}, not {cluster!r}")
    ec2 = connect_as(HubEc2, cluster, region or hub.region, aws_endpoint or hub.endpoint)
    try:
        mine = [i for i in ec2.user_workers(user) if server_of(i) == server]
    except CloudError as exc:
        raise cloud_error(exc) from exc
    name = f"{user}'s server {server!r}" if server else user
    inst = choose(mine)
    if inst is None:
        kept = read_kept(hub, user, server)
        if kept is None:
            raise BadInput(f"USER: {name} has no instance in cluster {cluster}")
        print_kept(kept, f"{name} has no instance in cluster {cluster}")
        return
    if inst.gone:
        raise BadInput(f"USER: {name}'s instance {inst.id} is terminated; its log went with it")
    if inst.state != "running" or not inst.private_ip:
        if agent:
            raise CommandError(
                f"{name}'s instance {inst.id} is {inst.state}; the hub keeps only Jupyter's log"
            )
        print_kept(read_kept(hub, user, server), f"{name}'s instance {inst.id} is {inst.state}")
        return
    run_worker_log(hub, inst, user, lines, follow, agent)


@click.command()
@cluster_argument
@click.argument("user", callback=check_user)
@click.option(
    "--server",
    callback=check_server,
    help="A named server of USER [default: the user's default server].",
)
@click.option(
    "--lines",
    type=click.IntRange(min=1, max=MAX_LOG_LINES),
    default=100,
    show_default=True,
    help="How many of the log's last lines to print.",
)
@click.option("--follow", is_flag=True, help="Then print what the log gets, until Ctrl-C.")
@click.option(
    "--agent", is_flag=True, help="The worker agent's log (its watchdog) instead of Jupyter's."
)
@click.option(
    "--via-manager",
    is_flag=True,
    help="From an admin's machine: run this command on the cluster's manager over SSH.",
)
@hub_settings_option
@manager_options
@aws_options()
def logs(
    cluster: str,
    user: str,
    server: str | None,
    lines: int,
    follow: bool,
    agent: bool,
    via_manager: bool,
    hub_settings: Path | None,
    region: str | None,
    aws_endpoint: str | None,
    **manager: Any,
) -> None:
    """Print USER's Jupyter log (with --agent, the worker agent's) from their instance.

    Runs on the manager; from elsewhere add --via-manager. A stopped instance's log is
    the tail the hub kept at its last stop or failed spawn. Exit 2: bad input (an
    unknown user, a terminated instance); 1: nothing to show, or it cannot be read.
    """
    if via_manager:
        forwarded = ["--lines", str(lines)]
        forwarded += ["--server", server] if server else []
        forwarded += ["--follow"] if follow else []
        forwarded += ["--agent"] if agent else []
        # After "--", a user name starting with "-" is never read as an option there.
        forwarded += ["--", user]
        logs_via_manager(cluster, forwarded, follow, region, aws_endpoint, manager)
        return
    show_logs(
        cluster,
        user,
        server or "",
        lines,
        follow,
        agent,
        region,
        aws_endpoint,
        hub_settings or settings_path(),
    )
