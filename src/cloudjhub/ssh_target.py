"""The SSH target of a running worker whose host keys the hub pinned: what the log
tail before a stop and the unmount before a hibernation both connect to. Neither
owns it, so neither depends on the other's mixin."""

from __future__ import annotations

from . import remote
from .aws.client import Instance
from .executor import blocking
from .host_keys import HostKeyStore
from .spawner_options import InstanceSpawnerOptions


async def pinned_target(
    options: InstanceSpawnerOptions, inst: Instance | None, connect_timeout: float
) -> remote.Target | None:
    """A running instance whose host keys we pinned, as an SSH target; None if it is
    not running or was never connected to (then nothing of ours runs on it)."""
    if inst is None or inst.state != "running" or not inst.private_ip:
        return None
    keys = await blocking(HostKeyStore(options.host_key_store).keys_for, inst.id)
    if not keys:
        return None
    return remote.Target(
        inst.private_ip,
        options.ssh_port,
        options.ssh_username,
        options.ssh_key_file,
        tuple(keys),
        connect_timeout,
    )
