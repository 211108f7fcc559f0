"""What a profile_list asks of the hub's IAM policy (`iam-policy --profiles`): the
instance types its workers may run as, and whether any of them is spot.

An unlisted choice that sets the instance type can take any value its regex lets
through, which a policy's wildcards cannot follow: the admin names those types.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .profiles import Override, Profile


@dataclass(frozen=True)
class PolicyNeeds:
    instance_types: tuple[str, ...]
    spot: bool
    # (profile, option) whose unlisted choice sets worker_instance_type or market.
    open_types: tuple[str, ...]


def _overrides(profile: Profile) -> Iterator[Override]:
    yield profile.spawner_override
    for option in profile.profile_options.values():
        for choice in option.choices.values():
            yield choice.spawner_override


def needs(profiles: list[Profile]) -> PolicyNeeds:
    types: list[str] = []
    spot = False
    open_types: list[str] = []
    for profile in profiles:
        for override in _overrides(profile):
            if override.worker_instance_type:
                types.append(override.worker_instance_type)
            spot = spot or override.market == "spot"
        for name, option in profile.profile_options.items():
            unlisted = option.unlisted_choice
            if not unlisted.enabled:
                continue
            if "worker_instance_type" in unlisted.spawner_override:
                open_types.append(f"profile {profile.key!r} option {name!r}")
            spot = spot or unlisted.spawner_override.get("market") == "spot"
    return PolicyNeeds(tuple(dict.fromkeys(types)), spot, tuple(open_types))
