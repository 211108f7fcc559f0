"""`worker_instance_type_fallbacks` checked against the region (DescribeInstanceTypes):
at the hub's start, so a type the region does not have (or one that cannot hibernate
when workers hibernate) stops the hub with one line, not the first user's spawn; and
before a spawner's first launch, once per list and hibernation setting.

An EC2 that does not answer at the hub's start only warns (as profile_types does):
the spawner's own check runs again before the first launch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .aws.client import CloudError

log = logging.getLogger(__name__)

TRAIT = "worker_instance_type_fallbacks"


def problems(
    kinds: list[str],
    describe: Callable[[str], dict[str, Any] | None],
    region: str,
    hibernate: bool,
) -> list[str]:
    """One line per unusable fallback type; `describe` is DescribeInstanceTypes of one."""
    found = []
    for kind in kinds:
        info = describe(kind)
        if info is None:
            found.append(f"{TRAIT}: {kind!r} is not an instance type in region {region}")
        elif hibernate and not info.get("HibernationSupported"):
            found.append(f"{TRAIT}: {kind!r} cannot hibernate, and workers hibernate (HIBERNATE)")
    return found


def check_at_start(
    kinds: object,
    describe: Callable[[str], dict[str, Any] | None],
    region: str,
    hibernate: bool,
) -> None:
    """ValueError with the first problem, for the hub's start."""
    if not isinstance(kinds, list) or not kinds:
        return
    try:
        found = problems([str(k) for k in kinds], describe, region, hibernate)
    except CloudError as exc:
        log.warning("cannot check %s in %s: %s", TRAIT, region, exc)
        return
    if found:
        raise ValueError(found[0])
