"""`cloudjhub reap`: the orphan reaper, run by the hub as a managed service."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from ..config import SERVER_CONFIG_ENV, server_config_path
from .errors import BadInput, CommandError, cloud_error
from .options import ExistingFile, Number


@click.command()
@click.option(
    "--interval",
    type=Number(min=1),
    default=None,
    help="Seconds between rounds [default: JUPYTER_NOTEBOOK_TIMEOUT / 4, within 5-300].",
)
@click.option(
    "--grace",
    type=Number(min=0),
    default=None,
    help="Seconds a running worker may go without a hub server before it is stopped "
    "[default: JUPYTER_NOTEBOOK_TIMEOUT / 2, within 10-600].",
)
@click.option(
    "--server-config",
    type=ExistingFile(),
    envvar=SERVER_CONFIG_ENV,
    default=None,
    help=f"The cluster's server_config.json [default: ${SERVER_CONFIG_ENV}, else ./].",
)
@click.option(
    "--usage-log",
    default=None,
    help="Append a stop event per reaped worker here [default: /var/lib/cloudjhub/usage.jsonl].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Serve the reaper's Prometheus metrics on 127.0.0.1:PORT; 0 for none.",
)
@click.option("--once", is_flag=True, help="Run one round and exit.")
def reap(
    interval: float | None,
    grace: float | None,
    server_config: Path | None,
    usage_log: str | None,
    metrics_port: int,
    once: bool,
) -> None:
    """Stop running workers that no hub server wants (JupyterHub service).

    The hub URL and token come from JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN,
    which JupyterHub sets for its services; a token never goes on a command line.
    """
    from ..aws.caller import name_caller
    from ..aws.client import CloudError
    from ..aws.hub import HubEc2
    from ..config import ConfigError, load_server_config
    from ..reaper import HubApi, Reaper, default_timing, run
    from ..usage import USAGE_LOG
    from .cloud_options import connect_as

    name_caller("reaper")
    api_url = os.environ.get("JUPYTERHUB_API_URL")
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not api_url or not token:
        raise CommandError(
            "JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are not set: run `cloudjhub reap` "
            "as a JupyterHub service (c.JupyterHub.services) with the scopes "
            "list:users and read:servers"
        )
    try:
        config = load_server_config(server_config)
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    where = f"; REGION and AWS_ENDPOINT_URL are read from {server_config_path(server_config)}"
    ec2 = connect_as(HubEc2, config.CLUSTER_NAME, config.REGION, config.AWS_ENDPOINT_URL, where)
    try:  # EC2 down, or the role not allowed to list: say so now, not in a log forever
        ec2.describe_workers()
    except CloudError as exc:
        raise cloud_error(exc, where) from exc
    default_interval, default_grace = default_timing(config.JUPYTER_NOTEBOOK_TIMEOUT)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname).1s %(asctime)s cloudjhub-reaper] %(message)s"
    )
    reaper = Reaper(
        ec2,
        HubApi(api_url, token),
        grace=default_grace if grace is None else grace,
        usage_log=USAGE_LOG if usage_log is None else usage_log,
    )
    if once:
        reaper.round()
        return
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(reaper, default_interval if interval is None else interval, stopping)
