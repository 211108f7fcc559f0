"""Which images the launcher can build on, told from what DescribeImages says of them.

The OS install scripts know apt (Ubuntu 22.04 and 24.04, Debian 12) and dnf (Amazon
Linux 2023, with python3.11). EC2 never says "this is Ubuntu 24.04": the image's
Name and Description, as Canonical, Debian and Amazon write them, are what there is,
and PlatformDetails ("Linux/UNIX", "Windows", "Red Hat Enterprise Linux", ...) tells
other operating systems apart.
"""

from __future__ import annotations

import re
from typing import Any

SUPPORTED = "Ubuntu 22.04 or 24.04, Debian 12, or Amazon Linux 2023"
# Canonical: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-...", "Canonical,
# Ubuntu, 22.04 LTS, ..."; Debian: "debian-12-amd64-...", "Debian 12 (...)"; Amazon:
# "al2023-ami-2023....", "Amazon Linux 2023 AMI ...".
_PLATFORMS = (
    ("Ubuntu 22.04", re.compile(r"\bubuntu\b.*\b22\.04\b", re.IGNORECASE)),
    ("Ubuntu 24.04", re.compile(r"\bubuntu\b.*\b24\.04\b", re.IGNORECASE)),
    ("Debian 12", re.compile(r"\bdebian[- ]12\b", re.IGNORECASE)),
    ("Amazon Linux 2023", re.compile(r"\bal2023-ami\b|\bamazon linux 2023\b", re.IGNORECASE)),
)
# The user cloud-init makes on each, which the EC2 key pair logs in as.
LOGIN_USERS = {
    "Ubuntu 22.04": "ubuntu",
    "Ubuntu 24.04": "ubuntu",
    "Debian 12": "admin",
    "Amazon Linux 2023": "ec2-user",
}
# Those whose archives have ec2-hibinit-agent, which hibernation needs (not Debian's).
HIBERNATING = ("Ubuntu 22.04", "Ubuntu 24.04", "Amazon Linux 2023")
# Those whose archives have amazon-efs-utils, whose helper is the only client that
# mounts EFS with IAM (EFS User Guide, "Mounting with IAM authorization"), which the
# shared folder's file system policy requires (launch/iam_shared.py).
EFS_UTILS = ("Amazon Linux 2023",)
_LINUX_DETAILS = ("Linux/UNIX", "Ubuntu Pro")
ARCHITECTURES = ("x86_64", "arm64")


def platform(image: dict[str, Any]) -> str | None:
    """The supported platform the image is, or None."""
    if image.get("Platform") == "windows":
        return None
    if image.get("PlatformDetails", "Linux/UNIX") not in _LINUX_DETAILS:
        return None
    if image.get("Architecture", "x86_64") not in ARCHITECTURES:
        return None
    text = f"{image.get('Name', '')} {image.get('Description', '')}"
    return next((name for name, pattern in _PLATFORMS if pattern.search(text)), None)


def describe(image: dict[str, Any]) -> str:
    """How a person recognises the image: its name, architecture and platform."""
    details = [image.get("Architecture"), image.get("PlatformDetails") or image.get("Platform")]
    extra = ", ".join(str(d) for d in details if d)
    return f"{image.get('Name', '')!r}" + (f" ({extra})" if extra else "")


def root_snapshot_gib(image: dict[str, Any]) -> int | None:
    """Size of the snapshot behind the image's root device, if it says."""
    root = image.get("RootDeviceName")
    for mapping in image.get("BlockDeviceMappings", []):
        size = mapping.get("Ebs", {}).get("VolumeSize")
        if mapping.get("DeviceName") == root and size is not None:
            return int(size)
    return None


def hibernation_problem(image: dict[str, Any]) -> str | None:
    """Why instances of this image cannot hibernate, or None.

    EC2 User Guide, "Prerequisites for EC2 instance hibernation": an HVM AMI, an EBS
    root volume, and that volume encrypted. Workers' root volumes are encrypted at
    launch (`Encrypted` in their block device mapping), so only the first two are
    the image's to meet.
    """
    kind = image.get("VirtualizationType", "hvm")
    if kind != "hvm":
        return f"a {kind} image; hibernation needs an HVM image"
    if image.get("RootDeviceType") == "instance-store":
        return "its root device is instance store; hibernation needs an EBS root volume"
    return None
