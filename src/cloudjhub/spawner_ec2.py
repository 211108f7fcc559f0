"""How InstanceSpawner's starts, stops and launches reach EC2: through the hub's queue
(`ec2_queue`: coalesced, paced by AWS's buckets, the user told their place), and
for a launch, on through the fallback types and subnets when AWS has no capacity.

A mixin beside `spawner_options`, so spawner.py keeps one spawn's path.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import replace
from typing import Any, ClassVar

from traitlets import Bool, Dict, Float, List, TraitError, Unicode, default, validate

from . import hibernation
from .aws.client import CloudError, Instance
from .aws.hub import HubEc2, WorkerSpec
from .aws.pacing import DEFAULT_RESERVE, check_reserve
from .ec2_limits import check_buckets, default_buckets
from .ec2_queue import Ec2Queue, pool_waited_message, waited_message
from .executor import blocking
from .spawner_options import InstanceSpawnerOptions, SpawnError, from_config

CAPACITY_ERROR = "InsufficientInstanceCapacity"
MAX_COALESCE_WINDOW = 10.0


class Ec2Calls(InstanceSpawnerOptions):
    """Options and helpers of the spawner's EC2 calls (`c.InstanceSpawner.<option>`)."""

    ec2_coalesce_window = Float(
        0.25,
        help="Seconds during which starts, stops and first-login launches of the same "
        "kind are gathered into one EC2 call (StartInstances and StopInstances with many "
        "ids, one RunInstances for many users, each instance then tagged to its user). "
        "0 turns coalescing off.",
    ).tag(config=True)
    ec2_client_throttle = Bool(
        True,
        help="Spend AWS's EC2 request buckets no faster than AWS refills them (a "
        "client-side token bucket per action family, ec2_request_buckets), so a storm of "
        "logins waits its turn instead of draining a bucket into RequestLimitExceeded "
        "retries. Users waiting see their place in the queue on the spawn page.",
    ).tag(config=True)
    ec2_request_buckets = Dict(
        help="Client-side token buckets: action family -> [capacity, refill_per_second]. "
        "Families: an action with its own bucket (RunInstances, StartInstances, "
        "CreateTags, ...), 'mutating', 'non-mutating', 'unfiltered-non-mutating', "
        "'resource-intensive', and the per-instance resource buckets '<Action> "
        "(resources)' of Run/Start/Stop/TerminateInstances. Defaults: AWS's published "
        "figures; give only the families to change (an account with raised limits).",
    ).tag(config=True)
    ec2_bucket_reserve = Float(
        DEFAULT_RESERVE,
        help="Fraction (0 to 0.5) of each client-side bucket the hub never plans to spend "
        "(at least 1 token, none of a bucket of 1): AWS's buckets are shared by every "
        "caller of the account and region and count requests as they arrive, so this "
        "headroom absorbs other callers and network jitter. Only bursts shrink; the rate "
        "stays AWS's refill. 0: spend each bucket down to empty.",
    ).tag(config=True)
    ec2_buckets_file = Unicode(
        "",
        help="A file where the hub and the warm pool's keeper (`cloudjhub warm-pool`, "
        "another process) keep the levels of the client-side buckets between them, so "
        "together they spend AWS's buckets no faster than AWS refills them (one set per "
        "account and region). The hub's config puts it beside usage_log; '' keeps this "
        "process's copy alone.",
    ).tag(config=True)
    worker_instance_type_fallbacks = List(
        Unicode(),
        help="Instance types to try, in order, when AWS answers InsufficientInstanceCapacity "
        "for worker_instance_type in every subnet of subnet_ids. Each must exist in the "
        "region (checked with DescribeInstanceTypes before the first launch).",
    ).tag(config=True)
    subnet_ids = List(
        Unicode(),
        help="Private subnets for workers, in order of preference (server_config SUBNET_IDS; "
        "default: [subnet_id]). Put them in different zones: a launch AWS has no capacity "
        "for in one is tried in the next.",
    ).tag(config=True)

    # Fallback lists checked once per hub process, per (cluster, region, endpoint,
    # the list, whether workers hibernate): a profile may change either.
    _types_checked: ClassVar[set[tuple[Any, ...]]] = set()

    @default("ec2_request_buckets")
    def _default_ec2_request_buckets(self) -> dict[str, list[float]]:
        return default_buckets()

    @validate("ec2_request_buckets")
    def _check_ec2_request_buckets(self, proposal: Any) -> Any:
        try:
            check_buckets(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"ec2_request_buckets: {exc}") from exc
        return proposal["value"]

    @validate("ec2_bucket_reserve")
    def _check_ec2_bucket_reserve(self, proposal: Any) -> Any:
        try:
            return check_reserve(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"ec2_bucket_reserve: {exc}") from exc

    @validate("ec2_coalesce_window")
    def _check_ec2_coalesce_window(self, proposal: Any) -> Any:
        value = proposal["value"]
        if not (math.isfinite(value) and 0 <= value <= MAX_COALESCE_WINDOW):
            raise TraitError(
                f"ec2_coalesce_window: {value!r}; must be seconds from 0 (off) to "
                f"{MAX_COALESCE_WINDOW:g}"
            )
        return value

    @validate("worker_instance_type_fallbacks", "subnet_ids")
    def _check_names(self, proposal: Any) -> Any:
        name = proposal["trait"].name
        pattern = r"^[a-z0-9][a-z0-9.\-]{1,40}$" if name != "subnet_ids" else r"^subnet-[0-9a-f]+$"
        for value in proposal["value"]:
            if not re.fullmatch(pattern, value):
                what = "an instance type" if name != "subnet_ids" else "subnet-<hex>"
                raise TraitError(f"{name}: {value!r} is not {what}")
        return proposal["value"]

    _default_subnet_ids = from_config("subnet_ids", "SUBNET_IDS")

    # ---- InstanceSpawner's -----------------------------------------------------------

    @property
    def ec2(self) -> HubEc2:
        raise NotImplementedError

    def _emit(self, percent: int, message: str) -> None:
        raise NotImplementedError

    # ---- the queue -----------------------------------------------------------------

    @property
    def _fleet_key(self) -> tuple[str, str, str]:
        return (self.cluster_name, self.region, self.aws_endpoint_url or "")

    @property
    def ec2_queue(self) -> Ec2Queue:
        buckets = check_buckets(self.ec2_request_buckets) if self.ec2_client_throttle else None
        return Ec2Queue.shared(
            self._fleet_key,
            self.ec2,
            self.ec2_coalesce_window,
            buckets,
            self.ec2_buckets_file,
            self.ec2_bucket_reserve,
        )

    def _queue_wait(self, place: int, seconds: float) -> None:
        self._emit(12, waited_message(place, seconds))

    def _pool_wait(self, place: int, seconds: float) -> None:
        self._emit(6, pool_waited_message(place, seconds))

    async def _queued_start(self, instance_id: str) -> None:
        await self.ec2_queue.start(instance_id, self._queue_wait)

    async def _queued_stop(self, instance_id: str, hibernate: bool) -> None:
        await self.ec2_queue.stop(instance_id, hibernate, self._queue_wait)

    # ---- a launch, with capacity fallback ------------------------------------------

    def _subnets(self) -> list[str]:
        subnets = list(self.subnet_ids) or [self.subnet_id]
        return list(dict.fromkeys(subnets))

    async def _check_fallback_types(self) -> None:
        """Refuse a fallback type the region does not have, once, before it matters."""
        key = (*self._fleet_key, tuple(self.worker_instance_type_fallbacks), self.hibernate)
        if not self.worker_instance_type_fallbacks or key in self._types_checked:
            return
        unknown = await blocking(
            self.ec2.unknown_instance_types, self.worker_instance_type_fallbacks
        )
        if unknown:
            raise SpawnError(
                f"cloudjhub is misconfigured: worker_instance_type_fallbacks: {unknown[0]!r} "
                f"is not an instance type in region {self.region}. Tell your admin."
            )
        for kind in self.worker_instance_type_fallbacks:
            reason = hibernation.unsupported_reason(kind) if self.hibernate else None
            if reason:
                raise SpawnError(
                    f"cloudjhub is misconfigured: worker_instance_type_fallbacks: {reason}"
                )
        self._types_checked.add(key)

    async def _launch_with_fallbacks(
        self, user: str, user_id: str, spec: WorkerSpec, token: str, server: str = ""
    ) -> Instance:
        """Launch as `spec`; on InsufficientInstanceCapacity the next subnet, then the
        next type in every subnet; fail naming everything tried."""
        if spec.market == "spot":
            # A spot request AWS cannot fill goes on-demand at once (run_worker), which
            # then takes this path with the fallbacks.
            return await self.ec2_queue.launch(user, user_id, spec, token, self._queue_wait, server)
        await self._check_fallback_types()
        tried: list[str] = []
        kinds = list(dict.fromkeys([spec.instance_type, *self.worker_instance_type_fallbacks]))
        subnets = self._subnets()
        if spec.subnet_id in subnets:
            subnets.remove(spec.subnet_id)
        subnets.insert(0, spec.subnet_id)
        subnets, zone = await self._in_home_zone(user, server, subnets)
        for kind in kinds:
            for subnet in subnets:
                attempt = replace(spec, instance_type=kind, subnet_id=subnet)
                if kind != spec.instance_type and spec.hibernate:
                    size = hibernation.root_volume_gib(kind, self.worker_ebs_size)
                    attempt = replace(attempt, ebs_size=size)
                # The first attempt is the user's own request; each other one is a
                # request of its own, idempotent in the same way.
                first = not tried
                attempt_token = token if first else _attempt_token(token, kind, subnet)
                if tried:
                    self._emit(11, f"No {tried[-1]} capacity; trying {kind} in {subnet}")
                try:
                    return await self.ec2_queue.launch(
                        user, user_id, attempt, attempt_token, self._queue_wait, server
                    )
                except CloudError as exc:
                    if exc.code != CAPACITY_ERROR:
                        raise
                    tried.append(f"{kind} in {subnet}")
                    self.log.warning("no %s capacity for %s in %s", kind, user, subnet)
        where = f" (only {zone}, where your home volume is)" if zone else ""
        raise SpawnError(
            f"AWS has no spare {' or '.join(kinds)} capacity right now; tried "
            + ", ".join(tried)
            + where
            + ". Try again in a few minutes; if it persists, ask your admin for another "
            "instance type or zone."
        )

    async def _home_zone(self, user: str, server: str) -> str | None:
        """The zone of the server's kept home volume, if home volumes are on."""
        if self.user_home_ebs_size <= 0:
            return None
        volume = await blocking(self.ec2.find_home_volume, user, server)
        return None if volume is None else str(volume["AvailabilityZone"])

    async def _in_home_zone(
        self, user: str, server: str, subnets: list[str]
    ) -> tuple[list[str], str | None]:
        """The subnets a launch may use: with a home volume, only those in its zone (an
        EBS volume attaches only in its own), and the zone; else all of them, None."""
        if len(subnets) < 2:
            return subnets, None
        zone = await self._home_zone(user, server)
        if zone is None:
            return subnets, None
        zones = await blocking(self.ec2.subnet_zones, subnets)
        usable = [s for s in subnets if zones.get(s) == zone]
        if not usable:
            raise SpawnError(
                f"Your home volume is in {zone}, and none of the cluster's subnets "
                f"({', '.join(subnets)}) is. Tell your admin."
            )
        return usable, zone


def _attempt_token(token: str, instance_type: str, subnet: str) -> str:
    raw = f"{token}\0{instance_type}\0{subnet}".encode()
    return "cjf-" + hashlib.sha256(raw).hexdigest()[:60]
