"""Which block device is a user's home volume, checked before anything mounts or formats it.

The agent runs as root and the device path comes in the request, so a path is only
trusted after it resolves to a block device under /dev that is the EBS volume named
in the request, is a whole disk (never a partition, so never part of the root disk),
and is neither mounted nor held by another device (LVM, RAID). The volume is
recognised by its NVMe serial (Nitro instances: EBS reports the volume id without
its dash) or, on Xen instances, by the ``sd``/``xvd`` name it was attached as.
Everything is read under a SystemPaths so tests can build a fake /dev, /sys and /proc.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .mountinfo import Mount, parse
from .protocol import AgentError, HomeVolume, bad_request

NITRO_EBS_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
DEVICE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class SystemPaths:
    """Where the kernel's views live; tests point these at a fake tree."""

    dev: Path = Path("/dev")
    sys: Path = Path("/sys")
    proc: Path = Path("/proc")

    @property
    def mountinfo(self) -> Path:
        return self.proc / "self" / "mountinfo"


@dataclass(frozen=True)
class HomeDevice:
    """A verified device, and where it is already mounted (if on the home itself)."""

    path: Path
    devno: str


def device_candidates(volume: HomeVolume, paths: SystemPaths = SystemPaths()) -> list[Path]:
    """Nitro instances expose EBS volumes as NVMe devices named by volume id."""
    serial = volume.volume_id.replace("-", "")
    candidates = [paths.dev / "disk" / "by-id" / f"{NITRO_EBS_PREFIX}{serial}"]
    for name in xen_names(volume):
        candidates.append(paths.dev / name)
    return candidates


def xen_names(volume: HomeVolume) -> list[str]:
    """The names the request's device may have under /dev: sdf is xvdf on Xen kernels."""
    if not volume.device:
        return []
    name = volume.device.removeprefix("/dev/")
    names = [name]
    if name.startswith("sd"):
        names.append("xvd" + name[2:])
    return names


def wait_for_device(
    candidates: Sequence[Path],
    timeout: float = DEVICE_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """The attachment completes asynchronously; wait for the kernel to show the device."""
    deadline = clock() + timeout
    while True:
        for path in candidates:
            if path.exists():
                return path
        if clock() >= deadline:
            names = ", ".join(str(p) for p in candidates)
            raise AgentError(f"home volume device did not appear within {timeout:g}s: {names}")
        sleep(1.0)


def read_mounts(paths: SystemPaths) -> list[Mount]:
    """Every mount of this mount namespace."""
    return parse(paths.mountinfo.read_text())


def verify_device(
    volume: HomeVolume, found: Path, home: Path, paths: SystemPaths = SystemPaths()
) -> HomeDevice:
    """The device ``found`` resolved and checked, or a one-line refusal naming why."""
    real = Path(os.path.realpath(found))
    dev_root = Path(os.path.realpath(paths.dev))
    if dev_root not in real.parents:
        bad_request(f"home volume device {found} is not a device under /dev")
    try:
        info = real.stat()
    except OSError as exc:
        raise AgentError(f"home volume device {found}: {exc.strerror}") from exc
    if not stat.S_ISBLK(info.st_mode):
        bad_request(f"home volume device {found} is not a block device")
    devno = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    block = paths.sys / "dev" / "block" / devno
    if not block.exists():
        bad_request(f"home volume device {found} is unknown to the kernel")
    if (block / "partition").exists():
        bad_request(f"home volume device {found} is a partition, not a whole volume")
    if not is_named_volume(volume, block):
        bad_request(f"home volume device {found} is not volume {volume.volume_id}")
    holders = block / "holders"
    if holders.is_dir() and any(holders.iterdir()):
        bad_request(f"home volume device {found} is in use by another device")
    in_use = {devno} | partition_devnos(block)
    for mount in read_mounts(paths):
        if mount.devno in in_use and not (mount.devno == devno and Path(mount.point) == home):
            bad_request(f"home volume device {found} is mounted on {mount.point}")
    return HomeDevice(real, devno)


def is_named_volume(volume: HomeVolume, block: Path) -> bool:
    """Nitro: the NVMe serial is the volume id; Xen: the attachment name is all there is."""
    serial_file = block / "device" / "serial"
    if serial_file.exists():
        serial = serial_file.read_text().strip()
        return serial == volume.volume_id.replace("-", "")
    name = os.path.basename(os.path.realpath(block))
    return name in xen_names(volume) and name.startswith(("sd", "xvd"))


def partition_devnos(block: Path) -> set[str]:
    """major:minor of each partition of a disk (they are its sysfs subdirectories)."""
    found = set()
    for child in block.iterdir():
        if (child / "partition").exists() and (child / "dev").exists():
            found.add((child / "dev").read_text().strip())
    return found


def mounted_on(home: Path, paths: SystemPaths = SystemPaths()) -> Mount | None:
    """What is mounted on ``home`` now (the last mount on a point is the visible one)."""
    here = [m for m in read_mounts(paths) if Path(m.point) == home]
    return here[-1] if here else None
