"""The warm pool: unassigned workers kept launched, so a first login skips RunInstances.

`pool_keeper.Keeper` keeps the pool at its target, and `cloudjhub warm-pool` runs it
as a hub-managed service. The spawner claims from the pool in the hub process
(`pool_claims`: a storm's claims in batches, one batch at a time) when a user has
no instance yet.

Why a service and not a task in the hub: JupyterHub has no hook that runs code in
the hub at start (spawners are made on a user's first request), and services are its
model for background work (the idle culler, the reaper): started, restarted and ended
with the hub, off its event loop, so the pool fills before anyone logs in.

The tags are the whole state, so a hub or service restart changes nothing:

- `cloudjhub:pool=ready`, no user: a member, free to claim;
- `cloudjhub:pool=claiming` and a user: that user's (a claim in progress, or one a
  hub restart cut short: the user tag decides, and their next spawn finishes it);
- `cloudjhub:pool=ready` and a user: tagged by hand; never handed to anyone, never
  counted (so it is replaced), never stopped by the reaper;
- `cloudjhub:pool=retiring`: chosen by the keeper to go; terminated on its next round
  unless a claim tagged a user on it meanwhile (then the mark is dropped);
- `cloudjhub:pool=claiming` and no user: a launch for several users that failed half
  way, or a claim whose undo was cut short: nobody's, terminated once stale.

cloud-init prints the SSH host keys to the console on an instance's first boot only,
so a stopped pool worker, started by its claim, shows none. The keeper therefore
records each member's keys (from its console, before it stops it) in a directory
on the manager, and the claim pins them from there.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .aws.client import CloudError, Instance
from .aws.hub import HubEc2
from .aws.pool_listing import running_pool_instances
from .tags import POOL_CLAIMING, POOL_READY, POOL_RETIRING, POOL_TAG

log = logging.getLogger("cloudjhub.warm_pool")

# DescribeInstances can lag a launch by seconds (as in fleet.py): a launch counts
# as a member until it is listed, or for this long.
LAUNCH_LAG_GRACE = 120.0
# A running member whose console shows no host keys this long is stopped anyway
# (its claim then waits for keys as a launch does).
KEYS_WAIT = 600.0
# A claim mark with no user this long after launch is nobody's: terminated. (A launch
# for several users tags them all within seconds; a replay of its token within this.)
STALE_CLAIM = 1800.0
# How often the keeper asks EC2 again about claimed workers whose keys it keeps
# (pool_key_files.py): a worker terminated meanwhile loses its keys within this.
KEYS_RECHECK = 300.0
# The keeper's keys directory's name beside the hub's usage log (hub/apply.py spells it
# out: the hub's config imports only config).
KEYS_DIR_NAME = "pool-host-keys"
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,32}$")
# Which member a claim takes first: the one that will serve soonest.
CLAIM_ORDER = {"running": 0, "pending": 1, "stopped": 2, "stopping": 3}


def is_member(
    instance: Instance, instance_type: str | None = None, image_id: str | None = None
) -> bool:
    """A live, unassigned pool worker (of `instance_type` and from `image_id`, if given:
    one launched before the type or the image changed is not a member, but retired)."""
    return (
        is_unassigned(instance)
        and (instance_type is None or instance.instance_type == instance_type)
        and (image_id is None or instance.image_id == image_id)
    )


def is_unassigned(instance: Instance) -> bool:
    """A live pool worker no user holds, of whatever type and image."""
    return instance.tags.get(POOL_TAG) == POOL_READY and instance.user is None and instance.live


def may_have_members(size: int, schedule: list[Any], cached: Iterable[Instance]) -> bool:
    """Whether a first login should look in the pool: it has a size or a schedule, or
    the hub's cached listing shows a member (a `cloudjhub prewarm` window); no extra
    EC2 call when there is no pool."""
    if size > 0 or schedule:
        return True
    return any(is_unassigned(i) for i in cached)


def stopped_under_claim(instance: Instance | None, states: tuple[str, ...], once: bool) -> bool:
    """A wait for `running` that finds the instance stopped: the keeper stopped a
    member in the moment between its last read and the hub's claim (the claim's lock
    is the hub's, not the keeper's). Started again, once."""
    return instance is not None and instance.state == "stopped" and "running" in states and not once


def is_claim_mark(instance: Instance) -> bool:
    return instance.tags.get(POOL_TAG) == POOL_CLAIMING


def is_claim(instance: Instance) -> bool:
    """A claim the hub began (its user's), whether or not it finished dropping the mark."""
    return is_claim_mark(instance) and instance.user is not None


def is_retiring(instance: Instance) -> bool:
    """Chosen by the keeper to go (see Keeper)."""
    return instance.tags.get(POOL_TAG) == POOL_RETIRING


def handed_out_by_hand(instance: Instance) -> bool:
    """Pool-tagged, with a user, but not by a claim (ready, or a value we never write):
    tagged by someone else, in an unknown state. (A retiring mark on a claimed worker
    is the keeper's, which drops it.)"""
    mark = instance.tags.get(POOL_TAG)
    return mark not in (None, POOL_CLAIMING, POOL_RETIRING) and instance.user is not None


def _keys_file(keys_dir: str, instance_id: str) -> Path:
    if not _INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(f"not an instance id: {instance_id!r}")
    return Path(keys_dir) / f"{instance_id}.keys"


def record_host_keys(keys_dir: str, instance_id: str, keys: list[str]) -> None:
    """Keep a pool member's host keys (written atomically: a claim never reads half)."""
    target = _keys_file(keys_dir, instance_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    try:
        tmp.write_text("".join(f"{k}\n" for k in keys))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def recorded_host_keys(keys_dir: str, instance_id: str) -> list[str]:
    """What the keeper recorded for a member; none if nothing (or no directory)."""
    if not keys_dir:
        return []
    try:
        text = _keys_file(keys_dir, instance_id).read_text()
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def claimable(members: Iterable[Instance], keys_dirs: Iterable[str]) -> list[Instance]:
    """Those of `members` a claim may hand out: their host keys recorded in each of
    `keys_dirs` ("" for none: hosts not pinned from the console). cloud-init prints
    them on the first boot only, so a member without them may never be verifiable (its
    spawn would wait for a console that stays empty, then fail); the user launches."""
    dirs = {d for d in keys_dirs if d}
    return [m for m in members if all(recorded_host_keys(d, m.id) for d in dirs)]


def ready_members(client: Any, keys_dir: str | Path, cluster: str) -> list[str]:
    """The running members of `cluster` a claim hands out now (by a bare EC2 client): a
    pool is ready for a class when there are enough (benchmarks/storm.py waits for
    them); another cluster's in the region are not its hub's to hand out."""
    free = [i for i in running_pool_instances(client, cluster) if is_unassigned(i)]
    return [i.id for i in claimable(free, [str(keys_dir)])]


def keys_dir_for_claims(keys_dir: str, source: Callable[[], str]) -> str:
    """Where a claim finds the keys it hands members out by (`claimable`):
    the keeper's directory when hosts are pinned from the console, made yet or not (a
    hub up before the keeper's first round hands out no member unrecorded). `source`
    is asked only when there is a directory."""
    if keys_dir and source() == "console":
        return keys_dir
    return ""


def unclaimed(instance: Instance) -> Instance:
    tags = {k: v for k, v in instance.tags.items() if k != POOL_TAG}
    return replace(instance, tags=tags)


def finish_claim(ec2: HubEc2, instance: Instance) -> Instance:
    """Drop the claim mark of `instance`, whose user tag already says whose it is."""
    ec2.finish_claim(instance)
    return unclaimed(instance)


def undo_claim(ec2: HubEc2, member: Instance, user: str, user_id: str, server: str) -> bool:
    """A claim that failed after its CreateTags may have landed: give the worker back
    to the pool. False if EC2 cannot be reached now: then it may be the user's (their
    next spawn finds it), and they must not be given another."""
    try:
        now = ec2.describe([member.id])
        if now and is_claim(now[0]) and (now[0].user, now[0].server) == (user, server):
            ec2.release_claim(now[0], user, user_id, server)
            log.info("gave pool worker %s back after %r's failed claim", member.id, user)
    except CloudError as exc:
        log.warning("cannot give pool worker %s back: %s", member.id, exc)
        return False
    return True
