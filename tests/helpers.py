"""Helpers shared by the unit and system tests."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

import pytest


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


def self_signed_pair(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and its unencrypted PKCS#8 key, both PEM."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def missing_here(why: str) -> NoReturn:
    """A test this machine cannot run: skipped on a developer's machine, failed in CI
    (`CI` set), where scripts/bootstrap installs the tools and tests run as root, so
    a skip there would hide a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to run this test: {why}")
    pytest.skip(why)
