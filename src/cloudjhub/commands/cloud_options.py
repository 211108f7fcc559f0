"""What the commands that talk to AWS share: the cluster argument, the AWS options,
connecting, confirmation and the report of what could not be deleted."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..aws.admin import AdminEc2
from ..aws.client import CloudError
from ..aws.hub import HubEc2
from ..aws.reach import check_reachable, checked
from ..launch.teardown import Failure
from ..tags import validate_cluster_name
from .errors import CommandError, cloud_error
from .options import env_option

F = TypeVar("F", bound=Callable[..., Any])


def _cluster(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return validate_cluster_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from exc


def cluster_argument(f: F) -> F:
    return click.argument("cluster", callback=_cluster)(f)


def aws_options(region_fallback: str = "") -> Callable[[F], F]:
    """--region and --aws-endpoint; unset, both come from the boto3 chain (and
    `region_fallback`, named in --help, is what the command uses when that has none)."""
    fallback = f", else {region_fallback}" if region_fallback else ""

    def decorate(f: F) -> F:
        f = env_option(
            "--aws-endpoint",
            metavar="URL",
            default=None,
            also=["AWS_ENDPOINT_URL"],  # the variable boto3 itself reads
            help="EC2-compatible endpoint [default: AWS_ENDPOINT_URL, else AWS].",
        )(f)
        return env_option(
            "--region",
            default=None,
            help=f"AWS region [default: AWS_DEFAULT_REGION or the profile's region{fallback}].",
        )(f)

    return decorate


E = TypeVar("E", bound=HubEc2)


def connect(cluster: str, region: str | None, aws_endpoint: str | None, then: str = "") -> AdminEc2:
    return connect_as(AdminEc2, cluster, region, aws_endpoint, then)


def connect_as(
    kind: type[E], cluster: str, region: str | None, aws_endpoint: str | None, then: str = ""
) -> E:
    """Every command's EC2 connection: a region AWS has (any, behind a custom endpoint)
    and an endpoint that fails at once if it never answers; else one line, exit 2."""
    try:
        ec2 = kind.connect(cluster, region, aws_endpoint)
        checked(ec2.client)
    except CloudError as exc:
        raise cloud_error(exc, then) from exc
    return ec2


def require_reachable(aws_endpoint: str, region: str) -> None:
    """For a command that starts things before its first EC2 call (the demo)."""
    try:
        check_reachable(aws_endpoint, region)
    except CloudError as exc:
        raise cloud_error(exc) from exc


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, yes: bool) -> None:
    """Go ahead only with --yes or a person's "y"; a script without --yes is refused."""
    if yes:
        return
    if not stdin_is_tty():
        raise CommandError(
            "refusing to go on without confirmation: stdin is not a terminal. "
            "Nothing was changed; re-run with --yes to confirm."
        )
    if not click.confirm(question, default=False):
        raise CommandError("not confirmed; nothing was changed")


def say(message: str) -> None:
    """Progress lines go to stderr, so stdout stays the listing."""
    click.echo(message, err=True)


def report(failures: list[Failure]) -> None:
    """Say what could not be deleted and why; exit 1 if anything could not."""
    if not failures:
        click.echo("done")
        return
    click.echo(f"could not delete {len(failures)} resource(s):", err=True)
    for failure in failures:
        click.echo(f"  {failure.resource}: {failure.reason}", err=True)
    raise click.exceptions.Exit(1)


def show_plan(plan: Any, cluster: str, verb: str, nothing: str, dry_run: bool) -> bool:
    """Print what will be deleted (or that nothing will); True if it should go on."""
    from ..launch import teardown

    notes = teardown.note_lines(plan)
    if plan.empty:
        click.echo(nothing)
        for line in notes:
            click.echo(line)
        return False
    click.echo(f"{'would' if dry_run else 'will'} {verb} in cluster {cluster}:")
    for line in teardown.plan_lines(plan) + notes:
        click.echo(line)
    return not dry_run
