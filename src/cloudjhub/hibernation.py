"""Which worker instance types can hibernate, and how big their root volume must be.

EC2 refuses to hibernate an instance unless its family supports it, its RAM is at most
150 GiB (Linux) and its encrypted EBS root volume can hold the RAM image on top of the
system. A typo here would only show up as a failed stop weeks later, so the list is
deliberately small: families AWS has supported for years, with their RAM per size.
This module imports nothing, so `config` can validate against it.
"""

from __future__ import annotations

import math

# The AWS limit for Linux instances.
MAX_RAM_GIB = 150.0

_SIZES_T = {
    "nano": 0.5,
    "micro": 1,
    "small": 2,
    "medium": 4,
    "large": 8,
    "xlarge": 16,
    "2xlarge": 32,
}
_SIZES_C3_C4 = {"large": 3.75, "xlarge": 7.5, "2xlarge": 15, "4xlarge": 30, "8xlarge": 60}

# family -> size -> RAM in GiB (sizes above MAX_RAM_GIB are left out on purpose).
RAM_GIB: dict[str, dict[str, float]] = {
    "t2": _SIZES_T,
    "t3": _SIZES_T,
    "t3a": _SIZES_T,
    "c3": _SIZES_C3_C4,
    "c4": _SIZES_C3_C4,
    "c5": {
        "large": 4,
        "xlarge": 8,
        "2xlarge": 16,
        "4xlarge": 32,
        "9xlarge": 72,
        "12xlarge": 96,
        "18xlarge": 144,
    },
    "m3": {"medium": 3.75, "large": 7.5, "xlarge": 15, "2xlarge": 30},
    "m4": {"large": 8, "xlarge": 16, "2xlarge": 32, "4xlarge": 64},
    "m5": {"large": 8, "xlarge": 16, "2xlarge": 32, "4xlarge": 64, "8xlarge": 128},
    "r3": {"large": 15.25, "xlarge": 30.5, "2xlarge": 61, "4xlarge": 122},
    "r4": {"large": 15.25, "xlarge": 30.5, "2xlarge": 61, "4xlarge": 122},
    "r5": {"large": 16, "xlarge": 32, "2xlarge": 64, "4xlarge": 128},
}


def ram_gib(instance_type: str) -> float | None:
    """RAM of a hibernation-capable instance type, or None if it cannot hibernate."""
    family, _, size = instance_type.partition(".")
    return RAM_GIB.get(family, {}).get(size)


def unsupported_reason(instance_type: str) -> str | None:
    """Why `instance_type` cannot hibernate, in words an admin can act on; None if it can."""
    if ram_gib(instance_type) is not None:
        return None
    families = ", ".join(sorted(RAM_GIB))
    return (
        f"{instance_type!r} cannot hibernate: use a size of up to {MAX_RAM_GIB:g} GiB RAM "
        f"from one of the families {families}, or turn HIBERNATE off"
    )


def root_volume_gib(instance_type: str, ebs_size: int) -> int:
    """Root volume size for a hibernating worker: the RAM image plus WORKER_EBS_SIZE.

    WORKER_EBS_SIZE keeps meaning "room for the system and the user's files"; the RAM
    image is added on top so turning hibernation on never shrinks that room.
    """
    ram = ram_gib(instance_type)
    if ram is None:
        raise ValueError(unsupported_reason(instance_type))
    return ebs_size + math.ceil(ram)
