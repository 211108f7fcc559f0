"""`cloudjhub demo`."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click


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
def demo(
    port: int,
    idle_timeout: int | None,
    api_token: str | None,
    aws_endpoint: str | None,
    state_dir: Path,
    vpc_cidr: str,
) -> None:
    """Run cloudjhub on this machine: EC2 emulated on loopback, a real JupyterHub."""
    from ..local.demo import DemoStack

    stack = DemoStack(
        state_dir=state_dir.resolve(),
        port=port,
        idle_timeout=idle_timeout,
        api_token=api_token,
        aws_endpoint=aws_endpoint,
        vpc_cidr=vpc_cidr,
        say=lambda m: click.echo(m, err=True),
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        click.echo("Starting the local cloud and JupyterHub...", err=True)
        stack.start()
        click.echo(f"cloudjhub demo is running: {stack.hub_url}")
        click.echo("Log in with any username and password; Ctrl-C stops everything.", err=True)
        sys.stdout.flush()
        while not stopping.wait(0.5):
            if stack.hub is not None and stack.hub.poll() is not None:
                raise click.ClickException(
                    f"JupyterHub exited with status {stack.hub.returncode}; "
                    f"see {stack.state_dir / 'jupyterhub.log'}"
                )
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        click.echo("Stopping...", err=True)
        stack.stop()
        click.echo("Stopped.", err=True)
