"""The warm pool: unassigned workers kept launched, so a first login skips RunInstances.

`Keeper` keeps the pool at its target (one round: count, retire members of an old
type or image, launch what is missing in one RunInstances or terminate what is beyond
the target, stop or start members to the target state); the target at a time is
pool_schedule.PoolPlan's (base size, schedule, `cloudjhub prewarm`'s one-off window).
`cloudjhub warm-pool` runs it as a hub-managed service. The spawner claims from the pool in the hub
process (`claim`), under an in-process lock, when a user has no instance yet.

Why a service and not a task in the hub: JupyterHub has no hook that runs code in
the hub at start (spawners are made on a user's first request), and services are its
model for background work (the idle culler, the reaper): started, restarted and ended
with the hub, off its event loop, so the pool fills before anyone logs in.

The tags are the whole state, so a hub or service restart changes nothing:

- `cloudjhub:pool=ready`, no user: a member, free to claim;
- `cloudjhub:pool=claiming` and a user: that user's (a claim in progress, or one a
  hub restart cut short: the user tag decides, and their next spawn finishes it);
- `cloudjhub:pool=ready` and a user: tagged by hand; never handed to anyone, never
  counted (so it is replaced), never stopped by the reaper.

cloud-init prints the SSH host keys to the console on an instance's first boot only,
so a stopped pool worker, started by its claim, shows none. The keeper therefore
records each member's keys (from its console, before it stops it) in a directory
on the manager, and the claim pins them from there.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import hibernation, remote
from .aws.client import CloudError, Instance
from .aws.hub import HubEc2, WorkerSpec
from .config import ServerConfig
from .pool_schedule import OneOff, PoolTarget
from .tags import POOL_CLAIMING, POOL_READY, POOL_TAG

log = logging.getLogger("cloudjhub.warm_pool")

# DescribeInstances can lag a launch by seconds (as in fleet.py): a launch counts
# as a member until it is listed, or for this long.
LAUNCH_LAG_GRACE = 120.0
# A running member whose console shows no host keys this long is stopped anyway
# (its claim then waits for keys as a launch does).
KEYS_WAIT = 600.0
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,32}$")
# Which member a claim takes first: the one that will serve soonest.
CLAIM_ORDER = {"running": 0, "pending": 1, "stopped": 2, "stopping": 3}


def constant_target(size: int, state: str) -> Callable[[float], PoolTarget]:
    """A target that never changes (no schedule; see pool_schedule.PoolPlan for one)."""
    target = PoolTarget(size, state)
    return lambda _now: target


def pool_spec(config: ServerConfig, instance_type: str | None = None) -> WorkerSpec:
    """What pool workers are launched as: what the spawner launches for a user (its
    `_spec`), from server_config.json, so a claimed worker is like a launched one."""
    kind = instance_type or config.WORKER_INSTANCE_TYPE
    size = config.WORKER_EBS_SIZE
    if config.HIBERNATE:
        size = hibernation.root_volume_gib(kind, size)
    return WorkerSpec(
        image_id=config.WORKER_AMI,
        instance_type=kind,
        subnet_id=config.SUBNET_ID,
        security_group_ids=tuple(config.WORKER_SECURITY_GROUPS),
        key_name=config.KEY_NAME,
        ebs_size=size,
        hibernate=config.HIBERNATE,
    )


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


def is_claim(instance: Instance) -> bool:
    """A claim the hub began (its user's), whether or not it finished dropping the mark."""
    return instance.tags.get(POOL_TAG) == POOL_CLAIMING and instance.user is not None


def handed_out_by_hand(instance: Instance) -> bool:
    """Pool-tagged, with a user, but not by a claim (ready, or a value we never write):
    tagged by someone else, in an unknown state."""
    mark = instance.tags.get(POOL_TAG)
    return mark is not None and mark != POOL_CLAIMING and instance.user is not None


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


def _unclaimed(instance: Instance) -> Instance:
    tags = {k: v for k, v in instance.tags.items() if k != POOL_TAG}
    return replace(instance, tags=tags)


def finish_claim(ec2: HubEc2, instance: Instance) -> Instance:
    """Drop the claim mark of `instance`, whose user tag already says whose it is."""
    ec2.finish_claim(instance)
    return _unclaimed(instance)


def claim(
    ec2: HubEc2,
    user: str,
    user_id: str,
    instance_type: str,
    image_id: str | None = None,
    server: str = "",
) -> Instance | None:
    """Tag a pool member to `user` (and their stable id, and their named `server`)
    and return it, or None if none could be had.

    Blocking. Callers in one process hold one lock around it, so two spawns never
    pick the same member; the check after tagging (re-read: still live, still
    `user`'s) catches a member terminated or retagged by hand meanwhile, which is
    then left alone and the next one tried.
    """
    members = [w for w in ec2.describe_workers() if is_member(w, instance_type, image_id)]
    members.sort(key=lambda w: (CLAIM_ORDER.get(w.state, 9), w.launched_at, w.id))
    for member in members:
        try:
            fresh = ec2.describe([member.id])
            if not fresh or not is_member(fresh[0], instance_type, image_id):
                continue  # claimed, terminated or retagged since the list was read
            ec2.tag_claim(fresh[0], user, user_id, server)
            after = ec2.describe([member.id])
        except CloudError as exc:
            log.warning("cannot claim pool worker %s for %r: %s", member.id, user, exc)
            continue
        if not after or after[0].gone or (after[0].user, after[0].server) != (user, server):
            log.warning("pool worker %s changed while %r claimed it; left alone", member.id, user)
            continue
        if after[0].tags.get(POOL_TAG) != POOL_CLAIMING:
            log.warning("pool worker %s lost its claim mark; left alone", member.id)
            continue
        try:
            return finish_claim(ec2, after[0])
        except CloudError as exc:
            # It is the user's now (their tag); their next spawn finishes the claim.
            log.warning("claimed %s for %r but cannot drop its pool tag: %s", member.id, user, exc)
            return after[0]
    return None


def one_off_reader(ec2: HubEc2) -> Callable[[], OneOff | None]:
    """What reads the one-off window (`cloudjhub prewarm`'s tag on the manager) each
    round. A value we did not write is said once in the log and ignored."""
    said: set[str] = set()

    def read() -> OneOff | None:
        for value in ec2.prewarm_tags():
            try:
                return OneOff.from_tag(value)
            except ValueError as exc:
                if value not in said:
                    said.add(value)
                    log.warning("ignoring the manager's prewarm tag: %s", exc)
        return None

    return read


@dataclass(frozen=True)
class RoundResult:
    members: int
    launched: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    # Members beyond the target (a window ended), and ones of an old type or image.
    terminated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)


# Which members go first when the pool shrinks: stopped first, i.e. those furthest from
# serving a claim (stopping, stopped, pending, then running); among equals the newest
# LaunchTime (EC2 resets it on every start: the most recently launched or started).
SHRINK_ORDER = {state: -rank for state, rank in CLAIM_ORDER.items()}


@dataclass
class Keeper:
    """Keeps the pool at its target; one `round()` per interval."""

    ec2: HubEc2
    spec: WorkerSpec
    target: Callable[[float], PoolTarget]
    clock: Callable[[], float] = time.time
    # Where members' host keys are recorded; "" when hosts are not pinned from the
    # console (ssh_host_key_source known_hosts).
    keys_dir: str = ""
    _reported: set[str] = field(default_factory=set)
    _launched: dict[str, float] = field(default_factory=dict)

    def round(self) -> RoundResult:
        want = self.target(self.clock())
        workers = self.ec2.describe_workers()
        self._report_strays(workers)
        members = [w for w in workers if self._current(w)]
        retired = self._terminate(
            [w for w in workers if is_unassigned(w) and not self._current(w)], "retired"
        )
        listed = {w.id for w in workers}
        now = time.monotonic()
        self._launched = {
            i: t
            for i, t in self._launched.items()
            if i not in listed and now - t < LAUNCH_LAG_GRACE
        }
        launched: list[str] = []
        missing = want.size - len(members) - len(self._launched)
        if missing > 0:
            token = "cjh-pool-" + secrets.token_hex(16)
            new = self.ec2.launch_pool_workers(self.spec, missing, token)
            launched = [i.id for i in new]
            self._launched.update(dict.fromkeys(launched, now))
            log.info("launched %d pool worker(s): %s", len(new), ", ".join(launched))
        terminated: list[str] = []
        if missing < 0:
            excess = sorted(
                members, key=lambda w: (SHRINK_ORDER.get(w.state, -9), -w.launched_at, w.id)
            )[:-missing]
            terminated = self._terminate(excess, f"beyond the target of {want.size}")
            members = [w for w in members if w.id not in terminated]
        stopped, started = self._to_state(members, want.state)
        self._forget_keys({w.id for w in workers if w.live} - set(terminated) - set(retired))
        return RoundResult(len(members), launched, stopped, started, terminated, retired)

    def _current(self, worker: Instance) -> bool:
        """A member of today's kind: the type and image the pool launches now."""
        return is_member(worker, self.spec.instance_type, self.spec.image_id)

    def _terminate(self, workers: list[Instance], why: str) -> list[str]:
        """Terminate unassigned members, each read again first: never one the hub is
        claiming (a claim tags its user before anything else)."""
        gone: list[str] = []
        for worker in workers:
            try:
                fresh = self.ec2.describe([worker.id])
                if not fresh or not is_unassigned(fresh[0]):
                    continue
                self.ec2.terminate_workers([worker.id])
            except CloudError as exc:
                log.warning("cannot terminate pool worker %s: %s", worker.id, exc)
                continue
            gone.append(worker.id)
        if gone:
            log.info("terminated %d pool worker(s) (%s): %s", len(gone), why, ", ".join(gone))
        return gone

    def _keys_known(self, member: Instance) -> bool:
        """Record a running member's host keys; False while its console shows none."""
        if not self.keys_dir or recorded_host_keys(self.keys_dir, member.id):
            return True
        console = self.ec2.console_output(member.id, member.instance_type)
        keys = remote.parse_console_host_keys(console)
        if keys:
            record_host_keys(self.keys_dir, member.id, keys)
            return True
        if self.clock() - member.launched_at < KEYS_WAIT:
            return False
        # Stopped, it could never be verified: cloud-init prints keys on the first boot
        # only. Terminated instead, and replaced on the next round.
        log.warning("pool worker %s printed no host keys; terminating it", member.id)
        self.ec2.terminate_workers([member.id])
        return False

    def _forget_keys(self, keep: set[str]) -> None:
        if not self.keys_dir or not Path(self.keys_dir).is_dir():
            return
        for path in Path(self.keys_dir).glob("i-*.keys"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)

    def _to_state(self, members: list[Instance], state: str) -> tuple[list[str], list[str]]:
        """Stop running members of a stopped pool; start stopped members of a running one."""
        stopped: list[str] = []
        started: list[str] = []
        for member in members:
            try:
                if state == "stopped" and member.state == "running":
                    if not self._keys_known(member) or not self._still_member(member):
                        continue
                    self.ec2.stop(member.id)
                    stopped.append(member.id)
                elif state == "running" and member.state == "stopped":
                    if not self._still_member(member):
                        continue
                    self.ec2.start(member.id)
                    started.append(member.id)
            except (CloudError, OSError) as exc:
                log.warning("cannot bring pool worker %s to %s: %s", member.id, state, exc)
        return stopped, started

    def _still_member(self, member: Instance) -> bool:
        """Read again just before acting: the hub may have claimed it since the list
        (its claim lock is the hub's, not ours), and a claimed worker is a user's."""
        fresh = self.ec2.describe([member.id])
        return bool(fresh) and self._current(fresh[0])

    def _report_strays(self, workers: Iterable[Instance]) -> None:
        for worker in workers:
            if handed_out_by_hand(worker) and worker.live and worker.id not in self._reported:
                self._reported.add(worker.id)
                log.warning(
                    "pool worker %s was tagged for %r by hand: left alone and replaced",
                    worker.id,
                    worker.user,
                )


def run(keeper: Keeper, interval: float, stopping: threading.Event) -> None:
    """A round every `interval` seconds until `stopping` is set (SIGTERM from the hub)."""
    log.info("warm pool: a round every %.0fs", interval)
    while not stopping.is_set():
        began = time.monotonic()
        try:
            keeper.round()
        except CloudError as exc:
            log.warning("warm pool round failed: %s", exc)
        except Exception:  # one bad round must not end the service
            log.exception("warm pool round failed")
        stopping.wait(max(0.0, interval - (time.monotonic() - began)))
