"""Helpers shared by the unit and system tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any


class ApiCalls(Counter[str]):
    """AWS API calls a boto3 client made, by operation name (e.g. "DescribeInstances").

    Counted at botocore's `before-call` event, so it sees every call the code
    under test makes through that client, whichever door it went through."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        client.meta.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self[model.name] += 1


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (what init has not reaped yet is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X", "x")


def inventory(client: Any, live_only: bool = False) -> dict[str, list[Any]]:
    """Every resource a launch or a teardown could create or delete, by id.

    `live_only` leaves terminated instances out (AWS lists them for an hour)."""
    instances = sorted(
        (i["InstanceId"], i["State"]["Name"])
        for r in client.describe_instances()["Reservations"]
        for i in r["Instances"]
        if not (live_only and i["State"]["Name"] == "terminated")
    )
    return {
        "instances": instances,
        "groups": sorted(g["GroupId"] for g in client.describe_security_groups()["SecurityGroups"]),
        "images": sorted(i["ImageId"] for i in client.describe_images(Owners=["self"])["Images"]),
        "snapshots": sorted(
            s["SnapshotId"] for s in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        ),
        "keys": sorted(k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]),
        "volumes": sorted(v["VolumeId"] for v in client.describe_volumes()["Volumes"]),
    }
