"""The pool's keeper: keeps the warm pool at its target, one round per interval.

One round: drop a retiring mark a claim overtook, terminate what an earlier round
marked (and stale claim marks nobody holds), mark members of an old type or image
and those beyond the target as retiring, launch what is missing (one RunInstances,
MinCount 1: AWS short of capacity launches fewer, and the next round tops up), and
stop or start members to the target state. The target at a time is
pool_schedule.PoolPlan's (base size, schedule, `cloudjhub prewarm`'s one-off window).
The tags it reads and writes are warm_pool's.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import hibernation, remote
from .aws.client import CloudError, Instance
from .aws.hub import HubEc2, WorkerSpec
from .config import ServerConfig
from .pool_key_files import KeyFiles
from .pool_schedule import OneOff, PoolTarget
from .warm_pool import (
    CLAIM_ORDER,
    KEYS_WAIT,
    LAUNCH_LAG_GRACE,
    STALE_CLAIM,
    handed_out_by_hand,
    is_claim_mark,
    is_member,
    is_retiring,
    is_unassigned,
    record_host_keys,
    recorded_host_keys,
)

log = logging.getLogger("cloudjhub.warm_pool")


def constant_target(size: int, state: str) -> Callable[[float], PoolTarget]:
    """A target that never changes (no schedule; see pool_schedule.PoolPlan for one)."""
    target = PoolTarget(size, state)
    return lambda _now: target


def shared_profile(config: ServerConfig) -> str:
    """The workers' instance profile, only when the cluster has a shared folder."""
    return config.SHARED_WORKER_INSTANCE_PROFILE if config.SHARED_FILE_SYSTEM_ID else ""


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
        instance_profile=shared_profile(config),
    )


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
    # Marked `retiring` this round (terminated on the next if still nobody's): members
    # beyond the target (a window ended), and ones of an old type or image.
    terminated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    # Terminated this round: marked on an earlier one, or a stale claim nobody holds.
    ended: list[str] = field(default_factory=list)


# Which members go first when the pool shrinks: stopped first, i.e. those furthest from
# serving a claim (stopping, stopped, pending, then running); among equals the newest
# LaunchTime (EC2 resets it on every start: the most recently launched or started).
SHRINK_ORDER = {state: -rank for state, rank in CLAIM_ORDER.items()}


@dataclass
class Keeper:
    """Keeps the pool at its target; one `round()` per interval.

    Its calls are batched (one describe, one Start/Stop/TerminateInstances and one
    CreateTags per round for all members) and, in the `cloudjhub warm-pool` service,
    paced by the same client-side buckets as the hub's (`aws/pacing.py`).

    A member leaves in two steps, so it never goes while a hub claims it: it is marked
    `retiring` (no claim picks it from then on), and terminated on a later round if
    the mark is still there and no user tag is. A claim that tagged it just before the
    mark keeps it: the mark is dropped again (only if still `retiring`) and the user
    tag protects it meanwhile.
    """

    ec2: HubEc2
    spec: WorkerSpec
    target: Callable[[float], PoolTarget]
    clock: Callable[[], float] = time.time
    # Where members' host keys are recorded; "" when hosts are not pinned from the
    # console (ssh_host_key_source known_hosts).
    keys_dir: str = ""
    _reported: set[str] = field(default_factory=set)
    _launched: dict[str, float] = field(default_factory=dict)
    # Which claimed workers' keys files need no asking EC2 this round.
    _key_files: KeyFiles = field(default_factory=KeyFiles)

    def round(self) -> RoundResult:
        want = self.target(self.clock())
        if self.keys_dir:  # claims check members against it from now on
            Path(self.keys_dir).mkdir(parents=True, exist_ok=True)
        workers = self.ec2.pool_workers()  # every worker a round acts on has the pool tag
        self._report_strays(workers)
        self._unmark([w for w in workers if is_retiring(w) and w.user is not None and w.live])
        ended = self._end(
            [w for w in workers if (is_retiring(w) or self._stale_claim(w)) and w.user is None]
        )
        workers = [w for w in workers if w.id not in ended]
        members = [w for w in workers if self._current(w)]
        retired = self._retire(
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
            launched = self._launch(missing)
            self._launched.update(dict.fromkeys(launched, now))
        terminated: list[str] = []
        if missing < 0:
            excess = sorted(
                members, key=lambda w: (SHRINK_ORDER.get(w.state, -9), -w.launched_at, w.id)
            )[:-missing]
            terminated = self._retire(excess, f"beyond the target of {want.size}")
            members = [w for w in members if w.id not in terminated]
        stopped, started = self._to_state(members, want.state)
        if want.state == "running":  # (a stopped pool's are recorded before each stop)
            self._record_keys([m for m in members if m.state == "running"])
        # Only the terminated lose their keys: one marked retiring this round may be
        # kept for a claim that landed meanwhile (`_unmark`), and its keys printed once.
        self._key_files.forget(
            self.ec2,
            self.keys_dir,
            {w.id for w in workers if w.live},
            {w.id for w in workers},
            self.clock(),
        )
        return RoundResult(len(members), launched, stopped, started, terminated, retired, ended)

    def _launch(self, count: int) -> list[str]:
        """Launch up to `count` members in one call; AWS may give fewer when it is short
        of capacity (MinCount 1), and the next round tops up."""
        token = "cjh-pool-" + secrets.token_hex(16)
        new = [i.id for i in self.ec2.launch_pool_workers(self.spec, count, token)]
        if len(new) < count:
            log.warning(
                "AWS launched %d of %d pool worker(s); topping up next round", len(new), count
            )
        log.info("launched %d pool worker(s): %s", len(new), ", ".join(new))
        return new

    def _current(self, worker: Instance) -> bool:
        """A member of today's kind: the type and image the pool launches now."""
        return is_member(worker, self.spec.instance_type, self.spec.image_id)

    def _stale_claim(self, worker: Instance) -> bool:
        """Marked as a claim in progress but nobody's, for long: what a launch for
        several users left when it failed half-way, or a claim whose undo was cut short."""
        return (
            worker.live
            and is_claim_mark(worker)
            and worker.user is None
            and self.clock() - worker.launched_at > STALE_CLAIM
        )

    def _fresh(self, workers: list[Instance]) -> dict[str, Instance]:
        """Read again just before acting (one call): the hub may have claimed since."""
        if not workers:
            return {}
        return {i.id: i for i in self.ec2.describe([w.id for w in workers])}

    def _retire(self, workers: list[Instance], why: str) -> list[str]:
        """Mark unassigned members `retiring`, each read again first: never one the hub
        is claiming (a claim tags its user before anything else)."""
        try:
            fresh = self._fresh(workers)
            ids = [w.id for w in workers if w.id in fresh and is_unassigned(fresh[w.id])]
            self.ec2.mark_retiring(ids)
        except CloudError as exc:
            log.warning("cannot retire pool workers: %s", exc)
            return []
        if ids:
            log.info("retiring %d pool worker(s) (%s): %s", len(ids), why, ", ".join(ids))
            self._unmark([i for i in self._fresh(workers).values() if is_retiring(i) and i.user])
        return ids

    def _unmark(self, claimed: list[Instance]) -> None:
        """A claim tagged these between our read and our mark: they are its user's."""
        if claimed:
            log.info("pool worker(s) claimed while retiring; kept: %s", [i.id for i in claimed])
            self.ec2.unmark_retiring([i.id for i in claimed])

    def _end(self, workers: list[Instance]) -> list[str]:
        """Terminate, in one call, those of `workers` still retiring (or stale claims)
        with no user on a fresh read."""
        try:
            fresh = self._fresh(workers)
            ids = [
                i.id
                for i in fresh.values()
                if i.live and i.user is None and (is_retiring(i) or self._stale_claim(i))
            ]
            self.ec2.terminate_workers(ids)
        except CloudError as exc:
            log.warning("cannot terminate pool workers: %s", exc)
            return []
        if ids:
            log.info("terminated %d pool worker(s): %s", len(ids), ", ".join(ids))
        return ids

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
        # only. Retired instead, and replaced on the next round.
        log.warning("pool worker %s printed no host keys; retiring it", member.id)
        self._retire([member], "no host keys")
        return False

    def _record_keys(self, running: list[Instance]) -> None:
        """Record running members' keys too, not only before a stop: a claim hands out
        only members whose keys are recorded (warm_pool.claimable)."""
        if self.keys_dir:
            for member in running:
                self._keys_ready(member)

    def _to_state(self, members: list[Instance], state: str) -> tuple[list[str], list[str]]:
        """Stop running members of a stopped pool, or start stopped members of a running
        one: read again just before, then one call for all."""
        if state == "stopped":
            todo = [m for m in members if m.state == "running"]
            todo = [m for m in todo if self._keys_ready(m)]
        else:
            todo = [m for m in members if m.state == "stopped"]
        try:
            fresh = self._fresh(todo)
            ids = [m.id for m in todo if m.id in fresh and self._current(fresh[m.id])]
            if ids and state == "stopped":
                self.ec2.stop_workers(ids, hibernate=False)
            elif ids:
                self.ec2.start_workers(ids)
        except CloudError as exc:
            log.warning("cannot bring pool workers to %s: %s", state, exc)
            return [], []
        return (ids, []) if state == "stopped" else ([], ids)

    def _keys_ready(self, member: Instance) -> bool:
        try:
            return self._keys_known(member)
        except (CloudError, OSError) as exc:
            log.warning("cannot record the host keys of pool worker %s: %s", member.id, exc)
            return False

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
