"""AWS's EC2 request buckets: the published numbers, and which bucket a request spends.

Source: EC2 Developer Guide, "Request throttling for the Amazon EC2 API". Each API
action has a request bucket (its category's size and refill rate, or its own);
RunInstances, StartInstances, StopInstances and TerminateInstances also take one
token per instance from a resource bucket. The hub spends them at the rate AWS
refills them (`aws/pacing.py`); the local cloud's like-AWS layer enforces them
(`local/awslike/buckets.py`). Both read the numbers here, the one place they live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# (bucket maximum capacity, refill tokens per second), from the guide's tables.
NON_MUTATING = (100.0, 20.0)
UNFILTERED_NON_MUTATING = (50.0, 10.0)
MUTATING = (50.0, 5.0)
RESOURCE_INTENSIVE = (50.0, 5.0)

# Non-mutating actions that use the smaller bucket when asked with neither a
# filter nor pagination.
UNFILTERED_ACTIONS = frozenset(
    {
        "DescribeInstances",
        "DescribeInstanceStatus",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "DescribeSnapshots",
        "DescribeSpotInstanceRequests",
        "DescribeVolumes",
    }
)
RESOURCE_INTENSIVE_ACTIONS = frozenset(
    {
        "AcceptVpcPeeringConnection",
        "AuthorizeSecurityGroupIngress",
        "CancelSpotInstanceRequests",
        "CreateKeyPair",
        "CreateVpcPeeringConnection",
        "DeleteVpcPeeringConnection",
        "RejectVpcPeeringConnection",
        "RevokeSecurityGroupIngress",
        "RequestSpotInstances",
    }
)
# "Uncategorized actions" with buckets of their own: the ones cloudjhub calls.
UNCATEGORIZED = {
    "CreateSnapshot": (100.0, 5.0),
    "CreateTags": (100.0, 10.0),
    "CreateVolume": (100.0, 5.0),
    "DeleteSnapshot": (100.0, 5.0),
    "DeleteTags": (100.0, 10.0),
    "DeleteVolume": (100.0, 5.0),
    "DeregisterImage": (100.0, 5.0),
    "ModifyImageAttribute": (100.0, 5.0),
    "RunInstances": (5.0, 2.0),
    "StartInstances": (5.0, 2.0),
    "TerminateInstances": (100.0, 5.0),
}
# Resource token buckets: one token per instance the request names or launches.
RESOURCE_BUCKETS = {
    "RunInstances": (1000.0, 2.0),
    "TerminateInstances": (1000.0, 20.0),
    "StartInstances": (1000.0, 2.0),
    "StopInstances": (1000.0, 20.0),
}
NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")
# Filter values in one request, over all its filters: EC2 answers more with
# FilterLimitExceeded, "The maximum number of filter values specified on a single call
# is 200" (error codes: "too many filters or too many filter values").
MAX_FILTER_VALUES = 200

# Family names for what no action names alone (c.InstanceSpawner.ec2_request_buckets).
FAMILY_NON_MUTATING = "non-mutating"
FAMILY_UNFILTERED = "unfiltered-non-mutating"
FAMILY_MUTATING = "mutating"
FAMILY_RESOURCE_INTENSIVE = "resource-intensive"
RESOURCES_SUFFIX = " (resources)"


def request_family(action: str, filtered: bool) -> str:
    """The request bucket an action spends: its own name if it has its own bucket,
    else its category's family. `filtered`: asked with a filter or pagination."""
    if action in UNCATEGORIZED:
        return action
    if action in RESOURCE_INTENSIVE_ACTIONS:
        return FAMILY_RESOURCE_INTENSIVE
    if action.startswith(NON_MUTATING_PREFIXES):
        if action in UNFILTERED_ACTIONS and not filtered:
            return FAMILY_UNFILTERED
        return FAMILY_NON_MUTATING
    return FAMILY_MUTATING


def resource_family(action: str) -> str | None:
    """The resource bucket an action spends one token per instance from, if any."""
    return action + RESOURCES_SUFFIX if action in RESOURCE_BUCKETS else None


def default_buckets() -> dict[str, list[float]]:
    """Every family's [capacity, refill per second] as AWS publishes them."""
    buckets = {
        FAMILY_NON_MUTATING: NON_MUTATING,
        FAMILY_UNFILTERED: UNFILTERED_NON_MUTATING,
        FAMILY_MUTATING: MUTATING,
        FAMILY_RESOURCE_INTENSIVE: RESOURCE_INTENSIVE,
        **UNCATEGORIZED,
        **{a + RESOURCES_SUFFIX: size for a, size in RESOURCE_BUCKETS.items()},
    }
    return {name: list(size) for name, size in buckets.items()}


def check_buckets(value: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Known families with [capacity >= 1, refill > 0], finite; ValueError naming the
    first bad entry and what is allowed."""
    known = default_buckets()
    checked = {}
    for name, size in value.items():
        if name not in known:
            raise ValueError(f"{name!r}: unknown family; known: {', '.join(sorted(known))}")
        numbers = list(size) if isinstance(size, list | tuple) else []
        ok = len(numbers) == 2 and all(
            isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n)
            for n in numbers
        )
        if not ok or numbers[0] < 1 or numbers[1] <= 0:
            raise ValueError(
                f"{name!r}: {size!r}; must be [capacity, refill_per_second] with "
                "capacity >= 1 and refill > 0"
            )
        checked[name] = (float(numbers[0]), float(numbers[1]))
    return checked
