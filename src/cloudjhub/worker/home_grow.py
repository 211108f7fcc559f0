"""Whether a home volume's ext4 file system is smaller than its device, so that
`resize2fs` grows it (after `cloudjhub resize-home`).

Sizes are compared at every start rather than a grow recorded: EBS reports a
volume's new size as soon as ModifyVolume is accepted, but the device grows only
when the modification reaches `optimizing` (EBS User Guide, "Monitor the progress
of Amazon EBS volume modifications"). A start in between finds nothing to grow;
the next start grows it, whatever was done before.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from .home_device import HomeDevice, SystemPaths
from .protocol import AgentError

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
# resize2fs may leave a tail too small for a block group; EBS grows by whole GiB.
SLACK_BYTES = 64 << 20
SECTOR = 512  # sysfs `size` counts 512-byte sectors, whatever the device's own


def device_bytes(devno: str, paths: SystemPaths) -> int:
    return int((paths.sys / "dev" / "block" / devno / "size").read_text().strip()) * SECTOR


def filesystem_bytes(device: Path, run: Runner) -> int:
    """Block count times block size, from the ext4 superblock (dumpe2fs -h)."""
    proc = run(["dumpe2fs", "-h", str(device)])
    if proc.returncode != 0:
        raise AgentError(f"reading the file system size on {device} failed (dumpe2fs)")
    fields = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    try:
        return int(fields["Block count"]) * int(fields["Block size"])
    except (KeyError, ValueError) as exc:
        raise AgentError(f"dumpe2fs {device} gave no block count and size") from exc


def needs_grow(device: HomeDevice, paths: SystemPaths, run: Runner) -> bool:
    return device_bytes(device.devno, paths) > filesystem_bytes(device.path, run) + SLACK_BYTES
