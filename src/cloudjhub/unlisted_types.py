"""An unlisted choice's instance type, checked at spawn (DescribeInstanceTypes).

The hub's start checks every type a profile names (profile_types.py), but the types
an unlisted choice can take are whatever its regex lets through: they can only be
checked when a user sends one. A type the region does not have, or a GPU type with
no GPU-capable image, is the user's to fix: one line, for an HTTP 400.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .aws.client import CloudError
from .profiles import UNLISTED_SUFFIX, Selection

log = logging.getLogger(__name__)


def problem(
    chosen: Selection,
    describe: Callable[[str], dict[str, Any] | None],
    region: str,
    gpu_image: bool,
) -> str:
    """Why the type an unlisted choice set cannot be launched ("" if it can)."""
    kind = chosen.overrides.get("worker_instance_type", "")
    for key in chosen.choices:
        name = key.removesuffix(UNLISTED_SUFFIX)
        option = chosen.profile.profile_options.get(name)
        if key == name or option is None:
            continue
        if "worker_instance_type" not in option.unlisted_choice.spawner_override:
            continue
        try:
            info = describe(kind)
        except CloudError as exc:  # EC2 not answering is not the user's mistake
            log.warning("cannot check instance type %s in %s: %s", kind, region, exc)
            return ""
        if info is None:
            return f"option {name!r}: {region} has no instance type {kind!r}"
        if info.get("GpuInfo") and not (chosen.overrides.get("worker_ami") or gpu_image):
            return f"option {name!r}: {kind} has GPUs, and this profile has no GPU-capable image"
    return ""
