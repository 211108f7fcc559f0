"""`cloudjhub cost CLUSTER`: a monthly estimate and what the usage log says was used."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..config import (
    POOL_STATES,
    ConfigError,
    load_instance_config,
    load_server_config,
    server_config_path,
)
from ..cost import CostError, Estimate, UsageReport, load_prices, monthly_estimate, usage_report
from ..usage import USAGE_LOG, read_events
from .cloud_options import cluster_argument
from .errors import BadInput, CommandError
from .options import ExistingFile, Number

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
ASSUMED_USERS = 25


def _cluster_defaults(cluster: str) -> dict[str, Any]:
    """Instance types and storage of `cluster`: its server_config.json if it is this
    cluster's, else instance_config.json (or the built-in defaults)."""
    try:
        launch = load_instance_config()
        defaults = {
            "instance_type": launch.WORKER_INSTANCE_TYPE,
            "manager_type": launch.MANAGER_INSTANCE_TYPE,
            "storage_gb": launch.WORKER_EBS_SIZE + launch.USER_HOME_EBS_SIZE,
            "pool_size": launch.WARM_POOL_SIZE,
            "pool_disk_gb": launch.WORKER_EBS_SIZE,
        }
        path = server_config_path()
        if path.exists():
            server = load_server_config(path)
            if cluster == server.CLUSTER_NAME:
                defaults["instance_type"] = server.WORKER_INSTANCE_TYPE
                defaults["storage_gb"] = server.WORKER_EBS_SIZE + server.USER_HOME_EBS_SIZE
                defaults["pool_size"] = server.WARM_POOL_SIZE
                defaults["pool_disk_gb"] = server.WORKER_EBS_SIZE
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    return defaults


def _when(value: datetime | None) -> float | None:
    """click parses dates as naive; they mean UTC."""
    return None if value is None else value.replace(tzinfo=UTC).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


@click.command()
@cluster_argument
@click.option(
    "--usage-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=USAGE_LOG,
    show_default=True,
    help="The hub's usage log (InstanceSpawner.usage_log).",
)
@click.option(
    "--prices",
    type=ExistingFile(),
    default=None,
    help="A price table with the keys of the shipped prices.json [default: shipped, us-east-1].",
)
@click.option(
    "--users",
    type=click.IntRange(min=0),
    default=None,
    help=f"Users for the estimate [default: users in the usage log, else {ASSUMED_USERS}].",
)
@click.option(
    "--hours-per-user",
    type=Number(min=0, max=744),
    default=40.0,
    show_default=True,
    help="Hours each user's instance runs per month, for the estimate.",
)
@click.option("--instance-type", default=None, help="Worker type [default: the cluster's].")
@click.option("--manager-type", default=None, help="Manager type [default: the cluster's].")
@click.option(
    "--storage-gb",
    type=Number(min=0),
    default=None,
    help="EBS GB per user, root plus home [default: the cluster's].",
)
@click.option(
    "--warm-pool-size",
    type=click.IntRange(min=0),
    default=None,
    help="Unassigned warm-pool workers [default: the cluster's WARM_POOL_SIZE].",
)
@click.option(
    "--warm-pool-state",
    type=click.Choice(POOL_STATES),
    default="stopped",
    show_default=True,
    help="The pool's state (InstanceSpawner.warm_pool_state): stopped costs disks only.",
)
@click.option(
    "--since", type=click.DateTime(DATE_FORMATS), default=None, help="Report usage from (UTC)."
)
@click.option(
    "--until", type=click.DateTime(DATE_FORMATS), default=None, help="Report usage to (UTC) [now]."
)
@click.option(
    "--group-by",
    metavar="TAG",
    default=None,
    help="Sum actual use by the value of this worker tag (EXTRA_TAGS, a profile's "
    "extra_tags), not by user.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def cost(
    cluster: str,
    usage_log: Path,
    prices: Path | None,
    users: int | None,
    hours_per_user: float,
    instance_type: str | None,
    manager_type: str | None,
    storage_gb: float | None,
    warm_pool_size: int | None,
    warm_pool_state: str,
    since: datetime | None,
    until: datetime | None,
    group_by: str | None,
    as_json: bool,
) -> None:
    """What CLUSTER costs per month, and what its users actually used."""
    defaults = _cluster_defaults(cluster)
    until_t = _when(until) or time.time()
    since_t = _when(since)
    if since_t is not None and since_t >= until_t:
        raise click.BadParameter("must be before --until (or now)", param_hint="--since")
    try:
        table = load_prices(prices)
        report: UsageReport | None = None
        warnings: list[str] = []
        if usage_log.exists():
            events, warnings = read_events(usage_log)
            mine = [e for e in events if e.cluster in ("", cluster)]
            report = usage_report(
                mine,
                table,
                until_t,
                since_t,
                default_type=defaults["instance_type"],
                group_by=group_by,
            )
            warnings += report.warnings
        else:
            warnings.append(f"{usage_log}: no usage log; estimate only")
        assumed = users is None and not (report and report.users)
        if users is None:
            seen = {u.user for u in report.users} if report else set()
            users = len(seen) or ASSUMED_USERS
        estimate = monthly_estimate(
            table,
            users,
            hours_per_user,
            instance_type or defaults["instance_type"],
            manager_type or defaults["manager_type"],
            defaults["storage_gb"] if storage_gb is None else storage_gb,
            defaults["pool_size"] if warm_pool_size is None else warm_pool_size,
            warm_pool_state,
            defaults["pool_disk_gb"],
        )
    except CostError as exc:
        raise BadInput(str(exc)) from exc
    except OSError as exc:
        raise CommandError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(_as_dict(cluster, table, estimate, report, warnings), indent=2))
        return
    _print(cluster, table, estimate, report, assumed, group_by or "user")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def _as_dict(
    cluster: str, table: Any, estimate: Estimate, report: UsageReport | None, warnings: list[str]
) -> dict[str, Any]:
    usage = None
    if report is not None:
        usage = {
            "since": report.since,
            "until": report.until,
            "period_hours": report.period_hours,
            "users": [dataclasses.asdict(u) for u in report.users],
            "instance_hours": report.instance_hours,
            "cost": report.cost,
            "always_on_cost": report.always_on_cost,
        }
    return {
        "cluster": cluster,
        "currency": table.currency,
        "prices": {"source": table.source, "region": table.region, "comment": table.comment},
        "estimate": {**dataclasses.asdict(estimate), "per_user": estimate.per_user},
        "usage": usage,
        "warnings": warnings,
    }


def _print(
    cluster: str,
    table: Any,
    e: Estimate,
    report: UsageReport | None,
    assumed: bool,
    group: str = "user",
) -> None:
    cur = "$" if table.currency == "USD" else table.currency + " "
    out = click.echo
    out(f"cloudjhub cost for cluster {cluster} ({table.region} prices, {table.source})")
    out("")
    out(f"Monthly estimate ({table.hours_per_month:g} h in a month)")
    rows = [
        (f"manager {e.manager_type}, always on", e.manager),
        (f"per user: {e.instance_type} x {e.hours_per_user:g} h", e.per_user_compute),
        (
            f"per user: {e.storage_gb:g} GB EBS x ({cur}{table.gp3_gb_month:g} gp3 + "
            f"{cur}{table.snapshot_gb_month:g} snapshot)",
            e.per_user_storage,
        ),
        *(
            [(f"warm pool: {e.pool_size} x {e.instance_type}, {e.pool_state}", e.pool)]
            if e.pool_size
            else []
        ),
        (f"total for {e.users} users{' (assumed; see --users)' if assumed else ''}", e.total),
        ("the same with workers always on", e.always_on_total),
    ]
    width = max(len(label) for label, _ in rows)
    for label, amount in rows:
        out(f"  {label:<{width}}  {cur}{amount:>10,.2f}")
    if report is None:
        return
    out("")
    out(
        f"Actual use {_iso(report.since)} -> {_iso(report.until)} "
        f"({report.period_hours:,.1f} h), compute only"
    )
    if not report.users:
        out("  no instance ran in this period")
        return
    name_w = max(len(group), *(len(u.who) for u in report.users))
    out(f"  {group:<{name_w}}  {'type':<11} {'inst-hours':>10} {'cost':>11} {'always on':>11}")
    for u in report.users:
        mark = " *" if u.still_running else ""
        out(
            f"  {u.who:<{name_w}}  {u.instance_type:<11} {u.instance_hours:>10,.2f} "
            f"{cur}{u.cost:>10,.2f} {cur}{u.always_on_cost:>10,.2f}{mark}"
        )
    out(
        f"  {'total':<{name_w}}  {'':<11} {report.instance_hours:>10,.2f} "
        f"{cur}{report.cost:>10,.2f} {cur}{report.always_on_cost:>10,.2f}"
    )
    if report.always_on_cost > 0:
        saved = report.always_on_cost - report.cost
        out(f"  saved vs always on: {cur}{saved:,.2f} ({saved / report.always_on_cost:.0%})")
    if any(u.still_running for u in report.users):
        out("  * still running: counted until the end of the period")
