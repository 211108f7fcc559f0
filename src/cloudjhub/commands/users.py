"""`cloudjhub users CLUSTER add|remove|list`: the allow list, the admins, the
teaching assistants and the students, changed through the hub's REST API while
it runs (no restart).

It speaks as the hub's `cloudjhub-users` service, whose token the manager's
setup keeps in /etc/cloudjhub/users_token (mode 0600, root and the hub only), so
it runs on the manager (`sudo cloudjhub users ...`); from elsewhere, give
`--hub-url` (e.g. through `ssh -L`), `--token-file` and `--ta-group`.

Admins: JupyterHub lets only an admin set a user's admin flag, and this service is
deliberately not one; `add --admin` puts users in the `admins` group, which holds
JupyterHub's admin role (so its token is as powerful as an admin's: root's alone
on the manager). Admins from `launch --admin-users` carry the flag and are
changed by a re-launch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import requests

from .errors import BadInput, CommandError
from .options import ExistingFile, env_option

COLUMNS = ("USER", "ADMIN", "GROUPS", "SERVER")


class Hub:
    """The few REST calls `users` makes, each failure one line."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # the hub's own address, never a proxy's
        self.session.headers["Authorization"] = f"token {token}"

    def call(self, method: str, path: str, ok: tuple[int, ...] = (), **kw: Any) -> Any:
        try:
            reply = self.session.request(method, self.url + path, timeout=30, **kw)
        except requests.RequestException as exc:
            raise CommandError(f"the hub at {self.url} does not answer: {exc}") from None
        if reply.status_code in ok:
            return None
        if reply.status_code >= 400:
            try:
                why = reply.json().get("message", reply.reason)
            except ValueError:
                why = reply.reason
            raise CommandError(f"{method} {path}: {reply.status_code} {why}")
        return reply.json() if reply.content else None

    def user(self, name: str) -> Any:
        return self.call("GET", f"/users/{quote(name, safe='')}", ok=(404,))

    def group_members(self, group: str, names: list[str], add: bool) -> None:
        self.call(
            "POST" if add else "DELETE",
            f"/groups/{quote(group, safe='')}/users",
            json={"users": names},
        )


@dataclass
class Target:
    """The hub to call and what its hub.json says about groups (unknown elsewhere)."""

    hub: Hub
    ta_group: str | None = None
    manages_groups: bool = False


def _connect(
    cluster: str, settings_file: Path | None, hub_url: str | None, token_file: Path | None
) -> Target:
    """The hub's API, its TA group and whether its authenticator owns the groups, from
    hub.json (and server_config.json, whose cluster must be CLUSTER)."""
    from ..config import ConfigError, load_server_config
    from ..hub.settings import load_settings
    from ..hub.signin_settings import manages_groups

    ta_group: str | None = None
    managed = False
    try:
        settings = load_settings(settings_file)
    except ConfigError as exc:
        if hub_url is None or token_file is None:
            raise BadInput(
                f"{exc} (give --hub-url and --token-file when not on the manager)"
            ) from None
    else:
        config = load_server_config(settings.spawner.server_config_file)
        if cluster != config.CLUSTER_NAME:
            raise BadInput(f"CLUSTER {cluster!r}: this manager's hub is {config.CLUSTER_NAME!r}")
        ta_group = settings.access.ta_group
        managed = manages_groups(settings.authenticator)
        hub_url = hub_url or f"http://{settings.hub_ip}:{settings.hub_port}/hub/api"
        if token_file is None and settings.access.users_token_file:
            token_file = Path(settings.access.users_token_file)
    if token_file is None:
        raise BadInput("--token-file: this hub has no users service token")
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise BadInput(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
    return Target(Hub(hub_url, token), ta_group, managed)


def _names(names: tuple[str, ...]) -> list[str]:
    from ..hub.signin_settings import check_name

    try:
        return [check_name(n) for n in names]
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _reach(fn: Any) -> Any:
    """--settings, --hub-url, --token-file on each subcommand (after CLUSTER ACTION)."""
    fn = env_option(
        "--token-file",
        type=ExistingFile(),
        default=None,
        help="The users service's token [default: from hub.json].",
    )(fn)
    fn = env_option(
        "--hub-url",
        default=None,
        help="The hub's API, e.g. http://127.0.0.1:8081/hub/api [default: from hub.json].",
    )(fn)
    fn = env_option(
        "--ta-group",
        default=None,
        help="The hub's TA group when not on the manager [default: from hub.json].",
    )(fn)
    return env_option(
        "--settings",
        type=ExistingFile(),
        default=None,
        help="The hub's hub.json [default: /etc/cloudjhub/hub.json or $CLOUDJHUB_HUB_SETTINGS].",
    )(fn)


def _target(ctx: click.Context, kw: dict[str, Any]) -> Target:
    target = _connect(ctx.obj, kw.pop("settings"), kw.pop("hub_url"), kw.pop("token_file"))
    target.ta_group = kw.pop("ta_group") or target.ta_group
    return target


@click.group()
@click.argument("cluster")
@click.pass_context
def users(ctx: click.Context, cluster: str) -> None:
    """Who may sign in, who is admin, teaching assistant or student: changed on the
    running hub through its REST API, no restart."""
    ctx.obj = cluster


def _role_command(ta: str, student: str, admin: str) -> Callable[[Any], Any]:
    """add and remove: NAMES, the three role flags (their help), the hub's reach."""

    def wrap(fn: Any) -> Any:
        fn = _reach(click.pass_context(fn))
        for flag, text in (("--admin", admin), ("--student", student), ("--ta", ta)):
            fn = click.option(flag, is_flag=True, help=text)(fn)
        return click.argument("names", nargs=-1, required=True)(fn)

    return wrap


def _begin(
    ctx: click.Context,
    kw: dict[str, Any],
    names: tuple[str, ...],
    roles: dict[str, bool],
    one_role: bool,
) -> tuple[Target, list[str]]:
    """The hub and the checked NAMES, once the role flags make sense for this hub."""
    target = _target(ctx, kw)
    chosen = [f"--{flag}" for flag, on in roles.items() if on]
    if roles["ta"] and not target.ta_group:
        raise BadInput("--ta: this hub has no TA group (launch with --ta-group NAME)")
    if one_role and len(chosen) > 1:
        raise BadInput("--admin, --ta and --student: a user is one of them")
    if chosen and target.manages_groups:
        raise BadInput(
            f"{chosen[0]}: this hub's generic-oauth sign-in with --allowed-groups takes "
            "every user's groups from the provider at each sign-in; change them there "
            "(or make admins with launch --admin-users)"
        )
    return target, _names(names)


@users.command()
@_role_command(
    ta="Put them in the TA group (and out of students).",
    student="Put them in the students group.",
    admin="Make them admins (the admins group).",
)
def add(
    ctx: click.Context, names: tuple[str, ...], ta: bool, student: bool, admin: bool, **kw: Any
) -> None:
    """Allow NAMES to sign in (the hub makes them users), with a role if given."""
    from ..hub.signin_settings import ADMINS_GROUP, STUDENTS_GROUP

    target, chosen = _begin(ctx, kw, names, {"admin": admin, "ta": ta, "student": student}, True)
    hub = target.hub
    for name in chosen:
        if hub.user(name) is None:
            hub.call("POST", f"/users/{quote(name, safe='')}")
            click.echo(f"added {name}")
    if ta and target.ta_group:
        hub.group_members(target.ta_group, chosen, add=True)
        hub.group_members(STUDENTS_GROUP, chosen, add=False)
    if student:
        hub.group_members(STUDENTS_GROUP, chosen, add=True)
    if admin:
        # Out of students first: a TA's reach (!group=students) never includes an admin.
        hub.group_members(STUDENTS_GROUP, chosen, add=False)
        hub.group_members(ADMINS_GROUP, chosen, add=True)


@users.command()
@_role_command(
    ta="Only take them out of the TA group.",
    student="Only take them out of the students group.",
    admin="Only take them out of the admins group.",
)
def remove(
    ctx: click.Context, names: tuple[str, ...], ta: bool, student: bool, admin: bool, **kw: Any
) -> None:
    """Without a flag: delete NAMES from the hub, so they may no longer sign in (their
    workers are terminated; home volumes are kept). With one: only that role."""
    from ..hub.signin_settings import ADMINS_GROUP, STUDENTS_GROUP

    target, chosen = _begin(ctx, kw, names, {"admin": admin, "ta": ta, "student": student}, False)
    hub = target.hub
    if admin:
        flagged = [n for n in chosen if (hub.user(n) or {}).get("admin")]
        if flagged:
            raise CommandError(
                f"{flagged[0]} is an admin by launch --admin-users; re-launch without them"
            )
        hub.group_members(ADMINS_GROUP, chosen, add=False)
    if ta and target.ta_group:
        hub.group_members(target.ta_group, chosen, add=False)
    if student:
        hub.group_members(STUDENTS_GROUP, chosen, add=False)
    for name in chosen:
        if not (ta or student or admin):
            hub.call("DELETE", f"/users/{quote(name, safe='')}", ok=(404,))
            click.echo(f"removed {name}")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per user.")
@_reach
@click.pass_context
def list_users(ctx: click.Context, as_json: bool, **kw: Any) -> None:
    """Every user: admin or not, groups, server state."""
    from ..hub.signin_settings import ADMINS_GROUP

    hub = _target(ctx, kw).hub
    rows = [
        {
            "name": u["name"],
            "admin": bool(u.get("admin")) or ADMINS_GROUP in (u.get("groups") or []),
            "groups": sorted(u.get("groups") or []),
            "server": ((u.get("servers") or {}).get("", {}).get("ready") and "ready")
            or ("pending" if u.get("pending") else "none"),
        }
        for u in sorted(hub.call("GET", "/users") or [], key=lambda u: u["name"])
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [COLUMNS] + [
        (r["name"], "yes" if r["admin"] else "", ",".join(r["groups"]), r["server"]) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
