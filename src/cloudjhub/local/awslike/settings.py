"""What `--like-aws`, `--fault NAME[:RATE]` and `--time-scale F` mean, parsed once.

Durations are AWS-like figures at scale 1. AWS documents no duration for
`pending`, `stopping` or `shutting-down` (EC2 User Guide, "Instance state
changes": only the order of states); the figures are what instances commonly
take there, "tens of seconds". `--time-scale` multiplies every one of them.
Throttling rates are rates AWS enforces per second and are never scaled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# The faults the layer can inject, each with the AWS error code it answers.
FAULTS = (
    "InsufficientInstanceCapacity",
    "DependencyViolation",
    "InvalidSnapshot.InUse",
    "IdempotentParameterMismatch",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
)

# Seconds at time scale 1.
PENDING_SECONDS = 30.0
STOPPING_SECONDS = 40.0
SHUTTING_DOWN_SECONDS = 30.0
# Buffered console output is "posted shortly after an instance transition state"
# (GetConsoleOutput); how shortly is not documented.
CONSOLE_POST_SECONDS = 30.0
# After DeregisterImage, its snapshots stay "in use" for a while (eventual consistency).
SNAPSHOT_RELEASE_SECONDS = 20.0
# A size change "usually takes a few seconds" to reach `optimizing`, and optimizing
# runs for minutes to hours (EBS User Guide, "Monitor the progress of Amazon EBS
# volume modifications"); a minute until `completed` keeps demos short.
VOLUME_MODIFICATION_SECONDS = 60.0
# EFS reports a new file system and mount target `creating` until it is `available`
# (EFS API Reference, CreateFileSystem and CreateMountTarget: "the LifeCycleState is
# creating" until done; DescribeFileSystems/DescribeMountTargets report it). How long
# is not documented: a file system takes seconds, a mount target (a network interface
# in the subnet) commonly a minute or more.
EFS_FILE_SYSTEM_SECONDS = 10.0
EFS_MOUNT_TARGET_SECONDS = 60.0
# IAM is eventually consistent ("Troubleshoot IAM": changes are not always immediately
# visible); a role made a moment ago is refused by DLM (aws/dlm_retry.py).
IAM_PROPAGATION_SECONDS = 8.0


class BadSetting(ValueError):
    """A --fault or --time-scale value the layer does not know; one line, what it knows."""


@dataclass(frozen=True)
class Behaviour:
    time_scale: float = 1.0
    # Fault name -> probability (0 < rate <= 1) that it hits a request it applies to.
    faults: dict[str, float] = field(default_factory=dict)

    def seconds(self, aws_seconds: float) -> float:
        return aws_seconds * self.time_scale

    @property
    def pending(self) -> float:
        return self.seconds(PENDING_SECONDS)

    @property
    def stopping(self) -> float:
        return self.seconds(STOPPING_SECONDS)

    @property
    def shutting_down(self) -> float:
        return self.seconds(SHUTTING_DOWN_SECONDS)

    @property
    def console_post(self) -> float:
        return self.seconds(CONSOLE_POST_SECONDS)

    @property
    def snapshot_release(self) -> float:
        return self.seconds(SNAPSHOT_RELEASE_SECONDS)

    @property
    def volume_modification(self) -> float:
        return self.seconds(VOLUME_MODIFICATION_SECONDS)

    @property
    def efs_file_system(self) -> float:
        return self.seconds(EFS_FILE_SYSTEM_SECONDS)

    @property
    def efs_mount_target(self) -> float:
        return self.seconds(EFS_MOUNT_TARGET_SECONDS)

    @property
    def iam_propagation(self) -> float:
        return self.seconds(IAM_PROPAGATION_SECONDS)


# InsufficientInstanceCapacity may be limited to one instance type, one subnet, or
# both: AWS runs out of one type in one zone, not of everything
# (`InsufficientInstanceCapacity=TYPE`, `=SUBNET` or `=TYPE@SUBNET`).
CAPACITY = "InsufficientInstanceCapacity"
_CAPACITY_SCOPE = re.compile(
    r"^(?:[a-z0-9][a-z0-9.\-]{1,40}(?:@subnet-[0-9a-f]{1,40})?|subnet-[0-9a-f]{1,40})$"
)


def _known_faults() -> str:
    return (
        ", ".join(FAULTS)
        + f" (NAME or NAME:RATE, 0 < RATE <= 1; {CAPACITY}=TYPE, =SUBNET or =TYPE@SUBNET "
        "for one type or subnet)"
    )


def parse_fault(text: str) -> tuple[str, float]:
    name, sep, rate_text = text.partition(":")
    base, scoped, scope = name.partition("=")
    if base not in FAULTS or (scoped and (base != CAPACITY or not _CAPACITY_SCOPE.match(scope))):
        raise BadSetting(f"--fault {text!r}: unknown fault; known: {_known_faults()}")
    if not sep:
        return name, 1.0
    try:
        rate = float(rate_text)
    except ValueError:
        rate = math.nan
    if not 0 < rate <= 1:
        raise BadSetting(
            f"--fault {text!r}: RATE must be a number, 0 < RATE <= 1; known: {_known_faults()}"
        )
    return name, rate


def parse_time_scale(text: str) -> float:
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise BadSetting(
            f"--time-scale {text!r}: must be a positive number "
            "(1 = AWS's pace, 0.1 = ten times faster)"
        )
    return scale


def behaviour_from(faults: Iterable[str], time_scale: str | None) -> Behaviour:
    """The layer's settings from the command line's strings; BadSetting if unknown."""
    parsed = dict(parse_fault(f) for f in faults)
    scale = parse_time_scale(time_scale) if time_scale is not None else 1.0
    return Behaviour(time_scale=scale, faults=parsed)
