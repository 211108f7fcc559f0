"""`cloudjhub warm-pool`: keeps the warm pool filled, run by the hub as a managed service."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from ..config import SERVER_CONFIG_ENV
from .errors import BadInput, CommandError
from .options import Number
from .pool_options import pool_size_option, pool_state_option


@click.command("warm-pool")
@pool_size_option(
    "Unassigned workers to keep (InstanceSpawner.warm_pool_size) "
    "[default: WARM_POOL_SIZE of server_config.json]."
)
@pool_state_option("Keep them stopped (disks only) or running (InstanceSpawner.warm_pool_state).")
@click.option(
    "--instance-type",
    default=None,
    help="Instance type of pool workers [default: WORKER_INSTANCE_TYPE].",
)
@click.option(
    "--interval",
    type=Number(min=1),
    default=10.0,
    show_default=True,
    help="Seconds between rounds.",
)
@click.option(
    "--server-config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=SERVER_CONFIG_ENV,
    default=None,
    help=f"The cluster's server_config.json [default: ${SERVER_CONFIG_ENV}, else ./].",
)
@click.option(
    "--keys-dir",
    default="/var/lib/cloudjhub/pool-host-keys",
    show_default=True,
    help="Record pool workers' SSH host keys here (InstanceSpawner.warm_pool_keys_dir).",
)
@click.option(
    "--schedule",
    metavar="JSON",
    default=None,
    help="Windows when the pool has another size, as a JSON list "
    "(InstanceSpawner.warm_pool_schedule) [default: WARM_POOL_SCHEDULE].",
)
@click.option(
    "--time-zone",
    default=None,
    help="IANA time zone the schedule is read in (InstanceSpawner.warm_pool_time_zone) "
    "[default: WARM_POOL_TIME_ZONE].",
)
@click.option(
    "--host-key-source",
    type=click.Choice(("console", "known_hosts")),
    default=None,
    help="How the hub learns workers' host keys (InstanceSpawner.ssh_host_key_source); "
    "'console' records each member's before it is stopped [default: SSH_HOST_KEY_SOURCE].",
)
@click.option(
    "--ec2-request-buckets",
    metavar="JSON",
    default=None,
    help="Client-side token buckets for the keeper's EC2 calls, as "
    "InstanceSpawner.ec2_request_buckets: it spends AWS's buckets no faster than AWS "
    "refills them, as the hub does [default: AWS's published figures].",
)
@click.option(
    "--ec2-bucket-reserve",
    type=Number(0, 0.5),
    default=None,
    help="Fraction of each client-side bucket the keeper never plans to spend, as "
    "InstanceSpawner.ec2_bucket_reserve [default: 0.1].",
)
@click.option(
    "--buckets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Share the buckets' levels with the hub through this file "
    "(InstanceSpawner.ec2_buckets_file), so together they spend AWS's buckets no faster "
    "than AWS refills them [default: the keeper's own copy].",
)
@click.option("--once", is_flag=True, help="Run one round and exit.")
def warm_pool(
    size: int | None,
    state: str,
    instance_type: str | None,
    interval: float,
    server_config: Path | None,
    keys_dir: str,
    schedule: str | None,
    time_zone: str | None,
    host_key_source: str | None,
    ec2_request_buckets: str | None,
    ec2_bucket_reserve: float | None,
    buckets_file: Path | None,
    once: bool,
) -> None:
    """Keep SIZE launched, unassigned workers for first logins (JupyterHub service),
    more or fewer while a window of the schedule or of `cloudjhub prewarm` is open.

    Uses only EC2 (the manager's instance role), never the hub's API.
    """
    from ..aws.caller import name_caller
    from ..aws.client import CloudError
    from ..aws.hub import HubEc2
    from ..aws.pacing import DEFAULT_RESERVE, BucketFile, Pacer
    from ..config import ConfigError, check_warm_pool_schedule, load_server_config, parse_json
    from ..pool_keeper import Keeper, one_off_reader, pool_spec, run
    from ..pool_schedule import PoolPlan, PoolTarget, parse_windows
    from ..pool_schedule import time_zone as zone_named

    name_caller("pool-keeper")
    try:
        config = load_server_config(server_config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    try:
        raw = (
            config.WARM_POOL_SCHEDULE
            if schedule is None
            else parse_json(schedule.encode(), "--schedule")
        )
        zone = config.WARM_POOL_TIME_ZONE if time_zone is None else time_zone
        check_warm_pool_schedule(raw, zone)
        buckets = paced_buckets(ec2_request_buckets)
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    try:
        ec2 = HubEc2.connect(config.CLUSTER_NAME, config.REGION, config.AWS_ENDPOINT_URL)
    except CloudError as exc:
        raise CommandError(str(exc)) from exc
    reserve = DEFAULT_RESERVE if ec2_bucket_reserve is None else ec2_bucket_reserve
    shared = BucketFile(buckets_file) if buckets_file else None
    Pacer(buckets, shared=shared, reserve_fraction=reserve).attach(ec2.client)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname).1s %(asctime)s cloudjhub-warm-pool] %(message)s"
    )
    base = PoolTarget(config.WARM_POOL_SIZE if size is None else size, state)
    plan = PoolPlan(base, parse_windows(raw), zone_named(zone), one_off_reader(ec2))
    # Pinned from the console: record each member's keys before it is stopped.
    console = (host_key_source or config.SSH_HOST_KEY_SOURCE) == "console"
    keeper = Keeper(
        ec2, pool_spec(config, instance_type), plan, keys_dir=keys_dir if console else ""
    )
    if once:
        try:
            keeper.round()
        except CloudError as exc:
            raise CommandError(str(exc)) from exc
        return
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(keeper, interval, stopping)


def paced_buckets(value: str | None) -> dict[str, tuple[float, float]]:
    """--ec2-request-buckets, checked (ConfigError naming the option and the problem)."""
    from ..config import ConfigError, parse_json
    from ..ec2_limits import check_buckets

    if value is None:
        return {}
    raw = parse_json(value.encode(), "--ec2-request-buckets")
    try:
        if not isinstance(raw, dict):
            raise ValueError("must be a JSON object of family: [capacity, refill]")
        return check_buckets(raw)
    except ValueError as exc:
        raise ConfigError(f"--ec2-request-buckets: {exc}") from exc
