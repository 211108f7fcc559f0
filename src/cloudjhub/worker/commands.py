"""``cloudjhub-worker``'s commands (click): start, stop and inspect a user's Jupyter
server on an instance. ``cli`` is the entry point that runs them (see there).
"""

from __future__ import annotations

import json
import os
import sys

import click

# Each command imports what it alone needs, inside it: every run of the agent is one
# command, on the user's instance, on the path of a login, and pydantic (protocol,
# record) or the server's modules would otherwise cost every command their import.
from .contract import MAX_LOG_LINES, USER_RE, check_release_name
from .paths import Layout

# `stop`'s default, as server.DEFAULT_STOP_TIMEOUT (checked by a test): importing it
# would import the server's modules into every command.
DEFAULT_STOP_TIMEOUT = 10.0


def emit(obj: object) -> None:
    """Machine-readable output: one JSON document per command."""
    click.echo(json.dumps(obj))


def _user_option(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Reject bad names before they reach a file path."""
    if not USER_RE.fullmatch(value):
        raise click.BadParameter(f"{value!r} must match {USER_RE.pattern}")
    return value


user_option = click.option(
    "--user", required=True, callback=_user_option, help="JupyterHub user name."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run a JupyterHub user's single-user server on this instance.

    Called by the cloudjhub hub over SSH. Set CLOUDJHUB_WORKER_ROOT to a directory to
    emulate an instance there (no accounts, no mounts, runs as the current user).
    """


@cli.command()
def start() -> None:
    """Start the user's server from a JSON request on stdin.

    The request holds user, ip, port, env, cmd, home_volume and timeout; secrets go in
    env and are never printed or logged. Prints {"pid", "ip", "port"} once the server
    accepts connections. Exit 2: bad request, 3: server exited, 4: timed out.

    Optional: idle_timeout and self_stop_grace (seconds) start a watchdog that shuts
    the machine down when the server is unused, or the hub gone, for their sum.
    resume=true keeps a server that survived a hibernation if it is the same server;
    the answer then adds "resumed": true and the "api_token" that server runs with.
    """
    from .start import start_reply

    click.echo(start_reply())


@cli.command()
@user_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_STOP_TIMEOUT,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
def stop(user: str, timeout: float) -> None:
    """Stop the user's server.

    Sends SIGTERM to its process group, then SIGKILL after --timeout. Prints
    {"stopped": true|false}; false means nothing was running. Always exits 0.
    """
    from .server import stop_server
    from .shared_mount import unmount_shared

    layout = Layout.from_env()
    stopped = stop_server(layout, user, timeout)
    unmount_shared(layout)
    emit({"stopped": stopped})


@cli.command()
@user_option
def watch(user: str) -> None:
    """Watch the user's server and shut the machine down when it is unused.

    Started by `start` when the request sets idle_timeout. Stops the machine after
    idle_timeout + self_stop_grace seconds without activity on the server, or without
    an answer from the hub. Gets the server's token in its environment from `start`.
    """
    from .watch_process import watch_user

    watch_user(user)


@cli.command()
@user_option
def status(user: str) -> None:
    """Show the user's server as JSON.

    Prints {"running", "pid", "ip", "port", "started"}; running is checked against the
    live process table, so a crashed server shows as not running.
    """
    from .server import server_status

    emit(server_status(Layout.from_env(), user))


@cli.command()
@user_option
@click.option(
    "--lines",
    type=click.IntRange(min=0, max=MAX_LOG_LINES),
    default=100,
    show_default=True,
    help="Number of lines to print.",
)
@click.option(
    "--follow", is_flag=True, help="Then print what is appended, until stdin ends (or Ctrl-C)."
)
@click.option("--agent", is_flag=True, help="The agent's log (its watchdog) instead of Jupyter's.")
def log(user: str, lines: int, follow: bool, agent: bool) -> None:
    """Print the last lines of the user's server log (or, with --agent, the agent's)."""
    from .logs import follow as follow_log
    from .logs import tail_lines

    layout = Layout.from_env()
    path = layout.watch_log_file(user) if agent else layout.log_file(user)
    try:
        end = path.stat().st_size
    except FileNotFoundError:
        end = 0
    for line in tail_lines(path, lines, end=end):
        click.echo(line)
    if follow:
        out = sys.stdout.buffer

        def write(chunk: bytes) -> None:
            out.write(chunk)
            out.flush()

        try:
            follow_log(path, write, end)
        except (BrokenPipeError, KeyboardInterrupt):
            # The reader went away, or a person pressed Ctrl-C: that is the end. Nothing
            # more can reach a closed pipe, not even the flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _release_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_release_name(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a release name") from None


@cli.command("stage-release")
@click.option("--name", required=True, callback=_release_name, help="The release's name.")
def stage_release(name: str) -> None:
    """Keep the release tarball on stdin (gzip tar) for users' next starts.

    Refused (exit 2) if any member would land outside its folder (absolute paths, ..,
    links leaving it, devices). Prints {"name", "sha256"}.
    """
    from .releases import stage

    emit({"name": name, "sha256": stage(Layout.from_env(), name, sys.stdin.buffer)})


@cli.command()
def releases() -> None:
    """List the staged releases as JSON: {name: sha256}."""
    from .releases import staged

    emit(staged(Layout.from_env()))


@cli.command("unmount-shared")
def unmount_shared_command() -> None:
    """Unmount /srv/shared (the emulator's stop of a machine)."""
    from .shared_mount import unmount_shared

    emit({"unmounted": unmount_shared(Layout.from_env())})


@cli.command("unmount-restored")
def unmount_restored_command() -> None:
    """Unmount the restored folders (~/restored-<date>): the hub's step before it
    hibernates the instance, so their volumes detach at the next start."""
    from .restored_unmount import unmount_restored

    emit({"unmounted": unmount_restored(Layout.from_env())})


@cli.command()
def pids() -> None:
    """List running server and watchdog pids as JSON.

    Covers every user recorded under the root; the local emulator uses it to end (or,
    when hibernating, suspend) the servers of an instance it stops.
    """
    from .server import running_pids

    emit(running_pids(Layout.from_env()))
