"""`cloudjhub status CLUSTER [USER]`: who has an instance, in what state, for how long;
the warm pool's unassigned workers; a user's last failed spawn, as the hub kept it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..aws.client import CloudError, Instance
from ..hub.settings import settings_path
from ..tags import HOME_USAGE_TAG, POOL_READY, POOL_TAG, Role
from .cloud_options import aws_options, cluster_argument, connect
from .errors import cloud_error
from .logs import check_optional_user, hub_settings_option, last_failed_spawn

COLUMNS = ("USER", "SERVER", "INSTANCE", "STATE", "TYPE", "HOME", "LAUNCHED", "UPTIME")
GB = 1 << 30


def home_usage(tags: dict[str, str]) -> dict[str, int] | None:
    """The home usage the worker's agent last reported (HOME_USAGE_TAG: "used size")."""
    used, _, size = tags.get(HOME_USAGE_TAG, "").partition(" ")
    if not (used.isdigit() and size.isdigit()):
        return None
    return {"used_bytes": int(used), "size_bytes": int(size)}


def _home(usage: dict[str, int] | None) -> str:
    if not usage or not usage["size_bytes"]:
        return "-"
    used, size = usage["used_bytes"], usage["size_bytes"]
    return f"{used / GB:.1f}/{size / GB:.1f} GB ({100 * used / size:.0f}%)"


def duration(seconds: int) -> str:
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def status_rows(
    instances: Iterable[Instance], now: datetime, include_terminated: bool = False
) -> list[dict[str, Any]]:
    """Manager(s) first, then workers by user. Uptime only for running instances:
    EC2 resets LaunchTime on every start, so it is the time since the last start."""
    wanted = {Role.MANAGER.value: 0, Role.WORKER.value: 1}
    chosen = [
        i for i in instances if i.role in wanted and (include_terminated or i.state != "terminated")
    ]
    chosen.sort(key=lambda i: (wanted[i.role or ""], i.user or "", i.server, i.id))
    rows = []
    for inst in chosen:
        running = inst.state == "running" and inst.launch_time is not None
        rows.append(
            {
                "role": inst.role,
                "user": inst.user,
                # The user's named server; "" for the default server.
                "server": inst.server,
                # "ready": an unassigned warm-pool worker; "claiming": being handed out.
                "pool": inst.tags.get(POOL_TAG),
                "instance_id": inst.id,
                "state": inst.state,
                "instance_type": inst.instance_type,
                "launch_time": inst.launch_time.isoformat() if inst.launch_time else None,
                "home_usage": home_usage(inst.tags),
                "uptime_seconds": (
                    int((now - inst.launch_time).total_seconds())
                    if running and inst.launch_time
                    else None
                ),
            }
        )
    return rows


def pool_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The warm pool: unassigned workers (ready, no user), by state."""
    members = [r for r in rows if r["pool"] == POOL_READY and r["user"] is None]
    states: dict[str, int] = {}
    for row in members:
        states[row["state"]] = states.get(row["state"], 0) + 1
    live = [r for r in members if r["state"] not in ("shutting-down", "terminated")]
    return {"ready": len(live), "states": dict(sorted(states.items()))}


def pool_line(summary: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {state}" for state, n in summary["states"].items())
    return f"pool: {summary['ready']} ready" + (f" ({states})" if states else "")


def _who(row: dict[str, Any]) -> str:
    if row["role"] == Role.MANAGER.value:
        return "(manager)"
    if row["pool"] == POOL_READY and row["user"] is None:
        return "(pool)"
    return row["user"] or "-"


def table(rows: list[dict[str, Any]]) -> str:
    cells = [COLUMNS]
    for row in rows:
        launched = row["launch_time"]
        cells.append(
            (
                _who(row),
                row["server"] or "-",
                row["instance_id"],
                row["state"],
                row["instance_type"],
                _home(row["home_usage"]),
                (
                    datetime.fromisoformat(launched).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
                    if launched
                    else "-"
                ),
                duration(row["uptime_seconds"]) if row["uptime_seconds"] is not None else "-",
            )
        )
    widths = [max(len(str(c[n])) for c in cells) for n in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


@click.command()
@cluster_argument
@click.argument("user", required=False, callback=check_optional_user)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
@click.option("--all", "show_all", is_flag=True, help="Include terminated instances.")
@hub_settings_option
@aws_options()
def status(
    cluster: str,
    user: str | None,
    as_json: bool,
    show_all: bool,
    hub_settings: Path | None,
    region: str | None,
    aws_endpoint: str | None,
) -> None:
    """List the cluster's workers (and manager): user, instance, state, type, uptime.

    With USER, only that user's, and (on the manager) their last failed spawn's log tail.
    """
    ec2 = connect(cluster, region, aws_endpoint)
    try:
        instances = ec2.describe_cluster()
    except CloudError as exc:
        raise cloud_error(exc) from exc
    rows = status_rows(instances, datetime.now(UTC), include_terminated=show_all)
    if user is not None:
        user_status(cluster, user, rows, as_json, hub_settings or settings_path())
        return
    pool = pool_summary(rows)
    if as_json:
        click.echo(json.dumps({"cluster": cluster, "instances": rows, "pool": pool}, indent=2))
        return
    if rows:
        click.echo(table(rows))
    if not any(r["role"] == Role.WORKER.value for r in rows):
        click.echo(f"no workers in cluster {cluster}")
    if any(r["pool"] for r in rows):
        click.echo(pool_line(pool))


def user_status(
    cluster: str, user: str, rows: list[dict[str, Any]], as_json: bool, hub_settings: Path
) -> None:
    """One user's instances, and the tail the hub kept of their last failed spawn."""
    mine = [r for r in rows if r["role"] == Role.WORKER.value and r["user"] == user]
    failed = last_failed_spawn(cluster, user, hub_settings)
    if as_json:
        out = {
            "cluster": cluster,
            "user": user,
            "instances": mine,
            "last_failed_spawn": failed.model_dump() if failed else None,
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(table(mine) if mine else f"{user} has no instance in cluster {cluster}")
    if failed is not None:
        click.echo(failed.heading())
        for line in failed.lines:
            click.echo(f"  {line}")
