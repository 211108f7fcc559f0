"""What the fleet emulator reads the fleet from: EC2's API, or the embedded moto itself.

The emulator plays AWS's side of the machines, so on AWS what it looks at costs
the cluster nothing. Through the API it cost a full DescribeInstances every half
second (moto's answer, the like-AWS layer's rewrite, botocore's parse: about 0.7 s
of CPU at 300 instances) on the GIL that the moto server answering the hub
shares. With the embedded moto (the demo's usual case) a pass instead copies a
few attributes per instance out of moto's EC2 backend, and shows each state as
the like-AWS layer would (its `Lifecycle.visible`), so a machine still boots only
once its instance visibly runs.

A listing read from the backend is `definitive`: an instance absent from it is
gone. One from the API may be partial, so an instance missing from it counts as
gone only after MISSING_LISTINGS complete listings in a row (`Absences`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..aws.client import Instance
from ..aws.local import LocalCloudEc2
from . import motoserver

log = logging.getLogger(__name__)

# Complete API listings in a row an instance must be missing from to count as gone.
MISSING_LISTINGS = 3
# The state AWS shows for an instance whose endpoint says `actual` (Lifecycle.visible).
Visible = Callable[[str, str], str]


@dataclass(frozen=True)
class Listing:
    """One look at every instance. `definitive`: read from the backend itself, so an
    id absent from it is gone, not merely left out of a partial answer."""

    instances: dict[str, Instance]
    definitive: bool = False


StateSource = Callable[[], Listing]


def api_source(ec2: LocalCloudEc2) -> StateSource:
    """DescribeInstances through the endpoint: for an outside --aws-endpoint, whose
    backend this process cannot read."""
    return lambda: Listing({i.id: i for i in ec2.describe_all()})


def moto_source(region: str, visible: Visible | None = None) -> StateSource:
    """The embedded moto's EC2 backend of `region`, read in this process, each state
    as `visible` shows it (the like-AWS layer's, when it is on; without it, an
    instance first seen while a RunInstances is answered shows `pending`, as the
    layer's does: moto lists it before it has its tags and instance profile)."""
    made: set[str] = set()

    def shown(instance_id: str, actual: str) -> str:
        if visible is not None:
            return visible(instance_id, actual)
        if instance_id not in made:
            if motoserver.launch_in_flight():
                return "pending"
            made.add(instance_id)
        return actual

    def read() -> Listing:
        instances: dict[str, Instance] = {}
        definitive = True
        for m in _moto_instances(region):
            try:
                instances[m.id] = _instance(m, shown)
            except Exception:
                # One odd instance must not stop every machine's boots and halts; a
                # listing that left one out is not proof that anything is gone.
                log.exception("cannot read instance %s from moto", getattr(m, "id", "?"))
                definitive = False
        return Listing(instances, definitive=definitive)

    return read


def _moto_instances(region: str) -> list[Any]:
    """moto's instance objects. Its dicts and lists are copied by single C calls, which
    hold the GIL throughout, so a request that launches meanwhile cannot break the loop."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    return [m for r in list(backend.reservations.values()) for m in list(r.instances)]


def _instance(moto_instance: Any, visible: Visible) -> Instance:
    """The fields the emulator uses, as DescribeInstances would give them."""
    backend = moto_instance.ec2_backend
    state = visible(moto_instance.id, str(moto_instance.state))
    profile = moto_instance.iam_instance_profile
    return Instance(
        id=moto_instance.id,
        state=state,
        instance_type=moto_instance.instance_type,
        private_ip=moto_instance.private_ip or None,
        launch_time=None,
        availability_zone="",
        tags=dict(backend.tags.get(moto_instance.id) or {}),
        instance_profile=(profile.get("Arn") if isinstance(profile, dict) else profile) or None,
        key_name=moto_instance.key_name or None,
    )


@dataclass
class Absences:
    """How many complete listings in a row each booted machine's instance was missing from."""

    counts: dict[str, int] = field(default_factory=dict)

    def gone(self, listing: Listing, booted: list[str]) -> list[str]:
        """The booted instances this listing says are gone (and forgets the rest)."""
        out = []
        for instance_id in booted:
            if instance_id in listing.instances:
                self.counts.pop(instance_id, None)
                continue
            seen = self.counts.get(instance_id, 0) + 1
            if listing.definitive or seen >= MISSING_LISTINGS:
                self.counts.pop(instance_id, None)
                out.append(instance_id)
            else:
                self.counts[instance_id] = seen
        return out
