"""The AWS behaviour layer's decisions, one EC2 request at a time (no HTTP here).

`before` may answer a request itself (throttled, refused, a fault, an
idempotent replay); `after` records what a successful request changed and
rewrites the reply to show what AWS would. Requests from the fleet emulator
("AWS itself") are `internal`: never throttled, never faulted, but they see the
same states, so a machine boots only when its instance is visibly running.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...aws.caller import OTHER
from ...aws.client import CloudError
from ...aws.local import LocalCloudEc2
from ...ec2_limits import MAX_FILTER_VALUES
from . import replies
from .buckets import Throttle
from .console import Console, hypervisor
from .faults import STATUS, Faults
from .idempotency import ClientTokens, fingerprint
from .lifecycle import Lifecycle
from .modifications import Modifications
from .settings import CAPACITY, Behaviour

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def fail(code: str, message: str) -> Answer:
    return Answer(STATUS.get(code, 400), replies.error(code, message))


def listed(params: Mapping[str, str], name: str) -> list[str]:
    """A Query API list parameter: Name.1, Name.2, ..."""
    prefix = f"{name}."
    return [
        v for k, v in sorted(params.items()) if k.startswith(prefix) and k[len(prefix) :].isdigit()
    ]


def filter_values(params: Mapping[str, str], name: str) -> set[str] | None:
    """The values of filter `name` in a Describe request, or None if it has none."""
    for key, value in params.items():
        if key.startswith("Filter.") and key.endswith(".Name") and value == name:
            number = key.split(".")[1]
            return set(listed(params, f"Filter.{number}.Value"))
    return None


def _count(table: dict[str, dict[str, int]], caller: str, action: str) -> None:
    row = table.setdefault(caller, {})
    row[action] = row.get(action, 0) + 1


def _copy(table: dict[str, dict[str, int]], lock: threading.Lock) -> dict[str, dict[str, int]]:
    with lock:
        return {caller: dict(row) for caller, row in table.items()}


class Layer:
    def __init__(
        self,
        behaviour: Behaviour,
        lookups: LocalCloudEc2,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.lookups = lookups
        self.throttle = Throttle(clock)
        self.lifecycle = Lifecycle(behaviour, clock)
        self.modifications = Modifications(behaviour.volume_modification, clock)
        self.console = Console(behaviour.console_post, clock)
        self.faults = Faults(behaviour, rng, clock)
        self.tokens = ClientTokens()
        self._types: dict[str, str] = {}
        # Clients' EC2 requests by action, refused or not (what a storm costs in calls),
        # and by caller (the User-Agent's cloudjhub/NAME, aws/caller.py) and action,
        # with the throttled ones apart: who spent a bucket in a storm.
        self.calls: dict[str, int] = {}
        self.calls_by_caller: dict[str, dict[str, int]] = {}
        self.throttled_by_caller: dict[str, dict[str, int]] = {}
        self._calls_lock = threading.Lock()

    # ---- lookups at the endpoint behind the layer ------------------------------

    def _actual_state(self, instance_id: str) -> str:
        found = self.lookups.describe([instance_id])
        return found[0].state if found else ""

    def _instance_type(self, instance_id: str) -> str:
        if instance_id not in self._types:
            found = self.lookups.describe([instance_id])
            if not found:
                return ""
            self._types[instance_id] = found[0].instance_type
        return self._types[instance_id]

    def _group_in_use(self, group_id: str) -> bool:
        return any(
            self.lifecycle.visible(i.id, i.state) != "terminated"
            for i in self.lookups.instances_in_group(group_id)
        )

    # ---- requests ----------------------------------------------------------------

    def before(
        self, action: str, params: Mapping[str, str], internal: bool, caller: str = OTHER
    ) -> Answer | None:
        if internal:
            return None
        with self._calls_lock:  # the proxy answers from many threads
            self.calls[action] = self.calls.get(action, 0) + 1
            _count(self.calls_by_caller, caller, action)
        if not self.throttle.admit(action, params):
            with self._calls_lock:
                _count(self.throttled_by_caller, caller, action)
            return fail("RequestLimitExceeded", "Request limit exceeded.")
        try:
            answer = self._refusal(action, params)
        except CloudError as exc:
            log.warning("like-aws: cannot look %s up at the endpoint: %s", action, exc)
            answer = None
        if answer is None and action == "RunInstances":
            self.lifecycle.launch_begins()  # ended by `forwarded`
        return answer

    def forwarded(self, action: str, internal: bool) -> None:
        """A request `before` let through is done at the endpoint, replied or not."""
        if action == "RunInstances" and not internal:
            self.lifecycle.launch_ends()

    def _refusal(self, action: str, params: Mapping[str, str]) -> Answer | None:
        faults = self.faults
        values = sum(1 for k in params if k.startswith("Filter.") and ".Value." in k)
        if values > MAX_FILTER_VALUES:  # moto takes any number
            return fail(
                "FilterLimitExceeded",
                f"The maximum number of filter values specified on a single call is "
                f"{MAX_FILTER_VALUES}",
            )
        if action == "StartInstances":
            message = self.lifecycle.refuse_start(listed(params, "InstanceId"), self._actual_state)
            if message:
                return fail("IncorrectInstanceState", message)
        if action == "ModifyVolume":
            message = self.modifications.refuse(params.get("VolumeId", ""))
            if message:
                return fail("IncorrectModificationState", message)
        if action == "AttachVolume" and self._device_in_use(params):
            device = params.get("Device", "")
            return fail(
                "InvalidParameterValue",
                f"Invalid value '{device}' for unixDevice. Attachment point {device} is "
                "already in use",
            )
        if action in ("RunInstances", "StartInstances"):
            refusal = self._no_capacity(action, params)
            if refusal is not None:
                return refusal
        spot = params.get("InstanceMarketOptions.MarketType") == "spot"
        for code in ("SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded"):
            if action == "RunInstances" and spot and faults.hits(code):
                return fail(
                    code, f"Your spot request cannot be filled now. (injected by --fault {code})"
                )
        if action == "RunInstances" and params.get("ClientToken"):
            launch = self.tokens.find(params["ClientToken"])
            if launch is not None:
                if launch.fingerprint == fingerprint(params):
                    return Answer(200, launch.reply)
                if faults.hits("IdempotentParameterMismatch"):
                    return fail(
                        "IdempotentParameterMismatch",
                        "The client token has already been used with different parameters. "
                        "(injected by --fault)",
                    )
        if action == "DeleteSecurityGroup" and "DependencyViolation" in faults.rates:
            group = params.get("GroupId", "")
            if group and self._group_in_use(group) and faults.hits("DependencyViolation"):
                return fail(
                    "DependencyViolation",
                    f"resource {group} has a dependent object (injected by --fault)",
                )
        if action == "DeleteSnapshot":
            snapshot = params.get("SnapshotId", "")
            if faults.snapshot_in_use(snapshot) and faults.hits("InvalidSnapshot.InUse"):
                return fail(
                    "InvalidSnapshot.InUse",
                    f"The snapshot {snapshot} is currently in use by an AMI (injected by --fault)",
                )
        if action == "DeregisterImage" and params.get("ImageId"):
            # Asked before the image goes: afterwards nobody can say what was behind it.
            faults.image_deregistered(self.lookups.image_snapshots(params["ImageId"]))
        if action == "GetConsoleOutput" and params.get("Latest", "").lower() == "true":
            instance_type = self._instance_type(params.get("InstanceId", ""))
            if instance_type and hypervisor(instance_type) != "nitro":
                return fail(
                    "UnsupportedOperation",
                    f"Latest console output is only supported on Nitro instance types, "
                    f"not {instance_type}.",
                )
        return None

    def _device_in_use(self, params: Mapping[str, str]) -> bool:
        """moto attaches two volumes at one device name; AWS refuses the second
        (EC2 User Guide, "Device names on Linux instances": each must be unique)."""
        instance, device = params.get("InstanceId", ""), params.get("Device", "")
        if not instance or not device:
            return False
        found = self.lookups._call(
            "describe_volumes",
            Filters=[
                {"Name": "attachment.instance-id", "Values": [instance]},
                {"Name": "attachment.device", "Values": [device]},
            ],
        )
        return bool(found.get("Volumes"))

    def _no_capacity(self, action: str, params: Mapping[str, str]) -> Answer | None:
        """InsufficientInstanceCapacity, for every request or one type/subnet's.

        Its shape: EC2 API "Error codes" (a server error, HTTP 500) and "Troubleshoot
        instance launch issues: Insufficient instance capacity", whose message names
        the type and says to try another zone or type."""
        kind = params.get("InstanceType", "")
        if action == "StartInstances":
            ids = listed(params, "InstanceId")
            kind = self._instance_type(ids[0]) if ids else ""
        subnet = params.get("SubnetId", "")
        scopes = [CAPACITY, f"{CAPACITY}={kind}", f"{CAPACITY}={subnet}"]
        scopes.append(f"{CAPACITY}={kind}@{subnet}")
        if not any(self.faults.hits(s) for s in scopes if s in self.faults.rates):
            return None
        return fail(
            CAPACITY,
            f"We currently do not have sufficient {kind or 'the requested instance type'} "
            "capacity in the Availability Zone you requested. Our system will be working on "
            "provisioning additional capacity. You can currently get capacity by not "
            "specifying an Availability Zone in your request or choosing another zone. "
            "(injected by --fault)",
        )

    def after(self, action: str, params: Mapping[str, str], body: bytes) -> bytes:
        """The reply of a successful request, as AWS would have written it."""
        visible = self.lifecycle.visible
        if action == "RunInstances":
            self.lifecycle.launched(replies.instance_ids(body))
            if params.get("ClientToken"):
                self.tokens.record(params["ClientToken"], params, body)
            return body
        if action == "ModifyVolume":
            self.modifications.begin(params.get("VolumeId", ""))
            return body
        if action in ("StartInstances", "StopInstances", "TerminateInstances"):
            begin, already = {
                "StartInstances": (self.lifecycle.started, ("pending", "running")),
                "StopInstances": (self.lifecycle.stopped, ("stopping", "stopped")),
                "TerminateInstances": (self.lifecycle.terminated, ("terminated",)),
            }[action]
            begin(replies.changed_ids(body, already))
            return replies.rewrite_states(body, visible)
        if action == "DescribeInstances":
            return replies.rewrite_states(
                body, visible, filter_values(params, "instance-state-name")
            )
        if action == "DescribeInstanceTypes":
            return replies.rewrite_hypervisors(body, hypervisor)
        if action == "GetConsoleOutput":
            latest = params.get("Latest", "").lower() == "true"
            return replies.with_console_output(
                body, self.console.output(params.get("InstanceId", ""), latest)
            )
        return body

    def stats(self) -> dict[str, Any]:
        return {
            "time_scale": self.behaviour.time_scale,
            "faults": self.faults.rates,
            "calls": dict(self.calls),
            "throttled": dict(self.throttle.throttled),
            "calls_by_caller": _copy(self.calls_by_caller, self._calls_lock),
            "throttled_by_caller": _copy(self.throttled_by_caller, self._calls_lock),
            "injected": dict(self.faults.injected),
        }
