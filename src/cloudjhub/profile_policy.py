"""What a profile_list asks of the hub's IAM policy (`iam-policy --profiles`): the
instance types its workers may run as, the images of their own they launch from, and
whether any of them may be spot.

An unlisted choice that sets the instance type or the image can take any value its
regex lets through, which a policy's wildcards cannot follow: the admin names those
types, and images are offered as choices. A templated market may be spot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .profiles import Override, Profile

# What AWS issues: ami- and 8 (older) or 17 hex digits.
_AMI = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")


@dataclass(frozen=True)
class PolicyNeeds:
    instance_types: tuple[str, ...]
    spot: bool
    # (profile, option) whose unlisted choice sets worker_instance_type.
    open_types: tuple[str, ...]
    # The profiles' own worker_ami, launched besides the cluster's image.
    images: tuple[str, ...] = ()
    # (profile, option) whose unlisted choice sets worker_ami from the user's value.
    open_images: tuple[str, ...] = ()


def _overrides(profile: Profile) -> Iterator[Override]:
    yield profile.spawner_override
    for option in profile.profile_options.values():
        for choice in option.choices.values():
            yield choice.spawner_override


def _image(where: str, ami: object) -> str:
    if not isinstance(ami, str) or not _AMI.match(ami):
        raise ValueError(
            f"{where}: worker_ami {ami!r} is not an AMI id (ami- and 8 or 17 hex digits)"
        )
    return ami


def needs(profiles: list[Profile]) -> PolicyNeeds:
    """Raises ValueError naming a profile whose worker_ami is not an AMI id."""
    types: list[str] = []
    images: list[str] = []
    spot = False
    open_types: list[str] = []
    open_images: list[str] = []
    for profile in profiles:
        for override in _overrides(profile):
            if override.worker_instance_type:
                types.append(override.worker_instance_type)
            if override.worker_ami:
                images.append(_image(f"profile {profile.key!r}", override.worker_ami))
            spot = spot or override.market == "spot"
        for name, option in profile.profile_options.items():
            unlisted = option.unlisted_choice
            if not unlisted.enabled:
                continue
            where = f"profile {profile.key!r} option {name!r}"
            given = unlisted.spawner_override
            if "worker_instance_type" in given:
                open_types.append(where)
            ami = given.get("worker_ami")
            if isinstance(ami, str) and "{value}" in ami:
                open_images.append(where)
            elif ami:
                images.append(_image(where, ami))
            # "{value}" may fill in spot: only a literal on-demand is not.
            spot = spot or given.get("market", "on-demand") != "on-demand"
    return PolicyNeeds(
        tuple(dict.fromkeys(types)),
        spot,
        tuple(open_types),
        tuple(dict.fromkeys(images)),
        tuple(open_images),
    )
