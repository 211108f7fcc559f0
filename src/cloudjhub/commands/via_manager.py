"""`cloudjhub logs --via-manager`: from an admin's machine, run `cloudjhub logs` on the
cluster's manager, where the hub's worker key and host-key store are.

The first hop is verified like the launcher's re-runs: with the manager's host keys
that the launch recorded (`cloudjhub-CLUSTER-resources.json`, by instance id), or a
known_hosts file; the second hop is the manager's own `cloudjhub logs`, verified by
the hub's store. No worker key ever leaves the manager. Arguments were validated
here and are validated again there; the command line is built with shlex, never
from a string.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import remote
from ..aws.client import CloudError
from ..install_paths import INSTALL_BIN
from ..launch.provision import sudo_for
from ..launch.record import recorded_pins
from ..tags import Role
from .cloud_options import connect, say
from .errors import BadInput, CommandError, cloud_error
from .options import ExistingFile, env_option

F = TypeVar("F", bound=Callable[..., Any])
REMOTE_TIMEOUT = 120.0


def manager_options(f: F) -> F:
    """How to reach the manager, as `launch` reached it."""
    for decorate in reversed(
        [
            env_option(
                "--key-file",
                type=ExistingFile(),
                help="With --via-manager: the private key the manager was launched with.",
            ),
            env_option(
                "--server-username",
                default="ubuntu",
                show_default=True,
                help="With --via-manager: the manager's login user.",
            ),
            env_option(
                "--ssh-port",
                type=click.IntRange(1, 65535),
                default=22,
                show_default=True,
                help="With --via-manager: the manager's SSH port.",
            ),
            env_option(
                "--connect-via",
                type=click.Choice(["public", "private"]),
                default="public",
                show_default=True,
                help="With --via-manager: reach the manager at its public or private IP.",
            ),
            env_option(
                "--record",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="With --via-manager: the launch's record, holding the manager's host "
                "keys [default: ./cloudjhub-CLUSTER-resources.json].",
            ),
            env_option(
                "--known-hosts",
                type=ExistingFile(),
                help="With --via-manager: take the manager's host key from this file instead.",
            ),
            env_option(
                "--manager-bin",
                default=INSTALL_BIN,
                show_default=True,
                help="With --via-manager: where cloudjhub is installed on the manager.",
            ),
        ]
    ):
        f = decorate(f)
    return f


def logs_via_manager(
    cluster: str,
    forwarded: list[str],
    follow: bool,
    region: str | None,
    aws_endpoint: str | None,
    opts: dict[str, Any],
) -> None:
    """Run `cloudjhub logs CLUSTER <forwarded>` on the manager; its output and exit
    status are this command's."""
    key_file: Path | None = opts["key_file"]
    if key_file is None:
        raise BadInput("--key-file: required with --via-manager (the manager's launch key)")
    ec2 = connect(cluster, region, aws_endpoint)
    try:
        managers = [i for i in ec2.describe_cluster(Role.MANAGER) if i.state == "running"]
    except CloudError as exc:
        raise cloud_error(exc) from exc
    if not managers:
        raise CommandError(f"cluster {cluster} has no running manager")
    manager = max(managers, key=lambda i: (i.launched_at, i.id))
    host = manager.private_ip if opts["connect_via"] == "private" else manager.public_ip
    if not host:
        raise BadInput(f"--connect-via: manager {manager.id} has no {opts['connect_via']} IP")
    keys = manager_keys(cluster, manager.id, host, opts)
    target = remote.Target(host, opts["ssh_port"], opts["server_username"], str(key_file), keys)
    argv = [
        *sudo_for(opts["server_username"]),
        f"{opts['manager_bin']}/cloudjhub",
        "logs",
        cluster,
        *forwarded,
    ]
    try:
        if follow:
            from .logs import stream

            status = stream(target, argv)
        else:
            result = remote.run_on(target, argv, b"", REMOTE_TIMEOUT)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            status = result.status
    except (remote.RemoteError, TimeoutError) as exc:
        raise CommandError(f"cannot run cloudjhub logs on manager {manager.id}: {exc}") from exc
    if status:
        raise click.exceptions.Exit(status)


def manager_keys(cluster: str, manager_id: str, host: str, opts: dict[str, Any]) -> tuple[str, ...]:
    """The manager's host keys: from --known-hosts, else the launch's record."""
    if opts["known_hosts"] is not None:
        found = remote.read_known_hosts(opts["known_hosts"], host, opts["ssh_port"])
        if not found:
            raise BadInput(f"--known-hosts: no key for {host} in {opts['known_hosts']}")
        return tuple(found)
    record = opts["record"] or Path(f"cloudjhub-{cluster}-resources.json")
    pins = recorded_pins(record, cluster, say)
    if manager_id not in pins:
        raise BadInput(
            f"--record: no host key of manager {manager_id} in {record} (run this where "
            "the launcher ran, or pass --record or --known-hosts)"
        )
    return pins[manager_id]
