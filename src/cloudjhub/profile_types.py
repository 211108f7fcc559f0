"""Profiles checked against the region when the hub starts (DescribeInstanceTypes):
a type the region does not have, a GPU type with no image of the profile's own
while the cluster's worker image has no NVIDIA driver (it has with `launch
--gpu-image`: server_config's GPU_IMAGE), or a hibernating profile on
a type that cannot hibernate stops the hub with one line naming the profile and
the field. An EC2 that does not answer only warns: it is not the profiles' fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from .aws.client import CloudError
from .profiles import Override, Profile

log = logging.getLogger(__name__)


def _overrides(profile: Profile) -> Iterator[tuple[str, Override]]:
    """(field path, override) of the profile and of each of its listed choices."""
    yield "spawner_override", profile.spawner_override
    for name, option in profile.profile_options.items():
        for key, choice in option.choices.items():
            yield f"profile_options.{name}.choices.{key}.spawner_override", choice.spawner_override


def problems(
    profiles: list[Profile],
    describe: Callable[[str], dict[str, Any] | None],
    region: str,
    hibernate: bool,
    gpu_image: bool = False,
) -> list[str]:
    """One line per problem; `describe` is DescribeInstanceTypes of one type;
    `gpu_image`: the cluster's worker image has the NVIDIA driver and CUDA."""
    found: list[str] = []
    for profile in profiles:
        base = profile.spawner_override
        for path, override in _overrides(profile):
            kind = override.worker_instance_type
            if not kind:
                continue
            where = f"profile_list: profile {profile.key!r}: field {path}.worker_instance_type"
            info = describe(kind)
            if info is None:
                found.append(f"{where}: {region} has no instance type {kind}")
                continue
            own_ami = override.worker_ami or base.worker_ami
            if info.get("GpuInfo") and not (own_ami or gpu_image):
                found.append(
                    f"{where}: {kind} has GPUs; name a GPU-capable worker_ami (NVIDIA driver "
                    "and CUDA) in this profile, or launch with --gpu-image"
                )
            wants = override.hibernate if override.hibernate is not None else base.hibernate
            if (hibernate if wants is None else wants) and not info.get("HibernationSupported"):
                found.append(f"{where}: {kind} cannot hibernate, and this profile hibernates")
    return found


def check(
    profiles: list[Profile],
    describe: Callable[[str], dict[str, Any] | None],
    region: str,
    hibernate: bool,
    gpu_image: bool = False,
) -> None:
    """ValueError with the first problem, for the hub's start."""
    try:
        found = problems(profiles, describe, region, hibernate, gpu_image)
    except CloudError as exc:
        log.warning("cannot check the profiles' instance types in %s: %s", region, exc)
        return
    if found:
        raise ValueError(found[0])
