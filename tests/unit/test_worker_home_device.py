"""The home volume's device, checked against a fake /dev, /sys and /proc with real device nodes.

Only a real instance reaches this code (the emulator has no devices), so the tests build
the kernel's views under tmp_path: block nodes made with mknod (we run as root), sysfs
entries with the EBS serial, and a mountinfo. The system tools are a recording runner.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudjhub.worker.accounts import System, mount_home_volume
from cloudjhub.worker.home_device import SystemPaths, verify_device
from cloudjhub.worker.protocol import AgentError, HomeVolume, ProtocolError

VOLUME = HomeVolume(volume_id="vol-0abc123", device="/dev/sdf")
BY_ID = "disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123"


@dataclass
class Machine:
    """A fake kernel view: disks in /dev and /sys, mounts in /proc/self/mountinfo."""

    top: Path
    mounts: list[str] = field(default_factory=list)

    @property
    def paths(self) -> SystemPaths:
        return SystemPaths(dev=self.top / "dev", sys=self.top / "sys", proc=self.top / "proc")

    def disk(self, name: str, devno: str, serial: str | None = None, parent: str = "") -> Path:
        """A block node plus its sysfs entry; with ``parent``, a partition of that disk."""
        base = self.top / "sys" / "devices" / "pci0000:00"
        entry = (base / parent / name) if parent else (base / name)
        entry.mkdir(parents=True)
        (entry / "dev").write_text(devno + "\n")
        (entry / "size").write_text(f"{(4 << 30) // 512}\n")  # 4 GiB in sectors
        (entry / "holders").mkdir()
        if parent:
            (entry / "partition").write_text("1\n")
        if serial is not None:
            (entry / "device").mkdir()
            (entry / "device" / "serial").write_text(serial + "   \n")
        link = self.top / "sys" / "dev" / "block" / devno
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(entry, link.parent))
        node = self.top / "dev" / name
        node.parent.mkdir(parents=True, exist_ok=True)
        major, minor = (int(n) for n in devno.split(":"))
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(major, minor))
        return node

    def link(self, name: str, target: str) -> Path:
        path = self.top / "dev" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        return path

    def mount(self, devno: str, point: str, options: str = "rw,relatime") -> None:
        n = len(self.mounts) + 20
        self.mounts.append(f"{n} 1 {devno} / {point} {options} shared:1 - ext4 /dev/x rw")
        info = self.top / "proc" / "self" / "mountinfo"
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text("\n".join(self.mounts) + "\n")

    def nitro(self) -> None:
        """Root disk nvme0n1 (partition p1 on /), the user's volume nvme1n1 (no file system)."""
        self.disk("nvme0n1", "259:0", serial="vol0rootdisk")
        self.disk("nvme0n1p1", "259:1", parent="nvme0n1")
        self.disk("nvme1n1", "259:2", serial="vol0abc123")
        self.link(BY_ID, "../../nvme1n1")
        self.link("sdf", "nvme1n1")
        self.mount("259:1", "/")


@dataclass
class Tools:
    """A recording stand-in for blkid, mkfs.ext4, mount and friends; dumpe2fs reports
    an ext4 of `fs_bytes`, which resize2fs grows to `grows_to`."""

    blkid: int = 2
    calls: list[list[str]] = field(default_factory=list)
    fs_bytes: int = 4 << 30
    grows_to: int = 4 << 30

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        code = self.blkid if argv[0] == "blkid" else 0
        out = ""
        if argv[0] == "dumpe2fs":
            out = f"Block count:              {self.fs_bytes // 4096}\nBlock size:               4096\n"
        if argv[0] == "resize2fs":
            self.fs_bytes = self.grows_to
        return subprocess.CompletedProcess(list(argv), code, out, "")

    def ran(self, program: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == program]


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    made = Machine(tmp_path / "m")
    made.top.mkdir()
    made.mount("0:21", "/proc")
    return made


def mount(machine: Machine, tools: Tools, volume: HomeVolume = VOLUME) -> Path:
    home = machine.top / "home" / "alice"
    system = System(run=tools, paths=machine.paths)
    mount_home_volume(volume, home, os.getuid(), os.getgid(), system)
    return home


def test_a_blank_nitro_volume_is_formatted_and_mounted_nosuid_nodev(machine: Machine) -> None:
    machine.nitro()
    tools = Tools(blkid=2)
    home = mount(machine, tools)
    device = str(machine.top / "dev" / "nvme1n1")
    assert tools.ran("blkid") == [["blkid", "-p", device]]
    assert tools.ran("mkfs.ext4") == [["mkfs.ext4", "-q", device]]
    assert tools.ran("mount") == [["mount", "-t", "ext4", "-o", "nosuid,nodev", device, str(home)]]
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_a_volume_with_a_file_system_is_never_formatted(machine: Machine) -> None:
    machine.nitro()
    tools = Tools(blkid=0)
    mount(machine, tools)
    assert tools.ran("mkfs.ext4") == []
    assert len(tools.ran("mount")) == 1


def test_a_blkid_failure_is_an_error_not_a_format(machine: Machine) -> None:
    machine.nitro()
    tools = Tools(blkid=4)
    with pytest.raises(AgentError, match="blkid"):
        mount(machine, tools)
    assert tools.ran("mkfs.ext4") == [] and tools.ran("mount") == []


def test_a_xen_volume_is_known_by_its_attachment_name(machine: Machine) -> None:
    machine.disk("xvda", "202:0")
    machine.disk("xvda1", "202:1", parent="xvda")
    machine.mount("202:1", "/")
    machine.disk("xvdf", "202:80")
    tools = Tools()
    mount(machine, tools)
    assert tools.ran("mount")[0][-2] == str(machine.top / "dev" / "xvdf")


def test_already_mounted_on_the_home_is_kept_or_remounted_nosuid_nodev(machine: Machine) -> None:
    machine.nitro()
    home = machine.top / "home" / "alice"
    home.mkdir(parents=True)
    machine.mount("259:2", str(home), "rw,nosuid,nodev")
    tools = Tools()
    mount(machine, tools)
    # Nothing probed, formatted or mounted again: only its size read (dumpe2fs -h).
    assert [c[0] for c in tools.calls] == ["dumpe2fs"]
    machine.mounts.pop()
    machine.mount("259:2", str(home), "rw,relatime")
    tools.calls.clear()
    mount(machine, tools)
    assert tools.calls[0] == ["mount", "-o", "remount,nosuid,nodev", str(home)]
    assert [c[0] for c in tools.calls[1:]] == ["dumpe2fs"]


def refused(machine: Machine, volume: HomeVolume, found: Path, why: str) -> None:
    home = machine.top / "home" / "alice"
    with pytest.raises(ProtocolError, match=why) as caught:
        verify_device(volume, found, home, machine.paths)
    assert "\n" not in caught.value.message


def test_paths_out_of_dev_and_non_devices_are_refused(machine: Machine) -> None:
    machine.nitro()
    etc = machine.top / "etc"
    etc.mkdir()
    (etc / "shadow").write_text("root:x:\n")
    dev = machine.top / "dev"
    refused(machine, VOLUME, dev / ".." / "etc" / "shadow", "not a device under /dev")
    machine.link("shadowlink", "../etc/shadow")
    refused(machine, VOLUME, dev / "shadowlink", "not a device under /dev")
    (dev / "sdg").write_text("a regular file")
    refused(machine, VOLUME, dev / "sdg", "not a block device")
    machine.link("sdh", "sdg")
    refused(machine, VOLUME, dev / "sdh", "not a block device")


def test_the_root_disk_its_partition_and_other_volumes_are_refused(machine: Machine) -> None:
    machine.nitro()
    dev = machine.top / "dev"
    refused(machine, VOLUME, dev / "nvme0n1", "is not volume vol-0abc123")
    root = HomeVolume(volume_id="vol-0rootdisk", device="/dev/sdf")
    refused(machine, root, dev / "nvme0n1", "mounted on /")
    refused(machine, VOLUME, dev / "nvme0n1p1", "partition")
    # Xen: the root disk by its own name, and a partition of it.
    machine.disk("xvda", "202:0")
    machine.disk("xvda1", "202:1", parent="xvda")
    machine.mount("202:1", "/")
    xen_root = HomeVolume(volume_id="vol-0abc123", device="/dev/xvda")
    refused(machine, xen_root, dev / "xvda", "mounted on /")
    refused(machine, xen_root, dev / "xvda1", "partition")


def test_a_mounted_or_held_volume_is_refused(machine: Machine) -> None:
    machine.nitro()
    found = machine.top / "dev" / BY_ID
    machine.mount("259:2", "/mnt/elsewhere")
    refused(machine, VOLUME, found, "mounted on /mnt/elsewhere")
    machine.mounts.pop()
    machine.mount("0:99", "/unrelated")
    holder = machine.top / "sys" / "dev" / "block" / "259:2" / "holders" / "dm-0"
    holder.mkdir()
    refused(machine, VOLUME, found, "in use by another device")
    holder.rmdir()
    assert verify_device(VOLUME, found, machine.top / "home", machine.paths).devno == "259:2"


def test_a_refused_device_is_neither_formatted_nor_mounted(machine: Machine) -> None:
    machine.nitro()
    (machine.top / "dev" / "sdf").unlink()
    machine.link("sdf", "nvme0n1")  # the request's device name points at the root disk
    (machine.top / "dev" / BY_ID).unlink()
    tools = Tools()
    with pytest.raises(ProtocolError, match="not volume"):
        mount(machine, tools)
    assert tools.calls == []


def test_the_file_system_grows_whenever_the_device_is_bigger(machine: Machine) -> None:
    """Sizes compared at every start: a start while ModifyVolume is still `modifying`
    (EBS says 9 GB, the device is still 4) grows nothing, and the next one grows it."""
    machine.nitro()
    home = machine.top / "home" / "alice"
    tools = Tools(blkid=0, grows_to=9 << 30)
    system = System(run=tools, paths=machine.paths)
    device = str(machine.top / "dev" / "nvme1n1")
    sectors = machine.top / "sys" / "dev" / "block" / "259:2" / "size"
    for size_gb, device_gib, runs in ((4, 4, 0), (9, 4, 0), (9, 9, 1), (9, 9, 1)):
        sectors.write_text(f"{(device_gib << 30) // 512}\n")
        volume = HomeVolume(volume_id="vol-0abc123", device="/dev/sdf", size_gb=size_gb)
        mount_home_volume(volume, home, os.getuid(), os.getgid(), system)
        assert tools.ran("resize2fs") == [["resize2fs", device]] * runs, (size_gb, device_gib)
