"""GetConsoleOutput as on AWS: buffered output after a delay, `Latest` only on Nitro.

Source: EC2 API Reference, GetConsoleOutput. By default it returns buffered
output "posted shortly after an instance transition state"; `Latest=true`
returns the latest output at any time, and only instance types on the Nitro
hypervisor support it. Only the most recent 64 KB are kept.

cloud-init prints the SSH host keys to the console once per instance (its
keys-to-console module runs per instance), so a restarted instance's console
has none: the fleet emulator, playing cloud-init, publishes them on the first
boot only, and a boot replaces what the console shows (a new boot, a new host).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_OUTPUT = 64 * 1024

# Instance families on the Xen hypervisor (EC2 User Guide, "Instances built on the
# AWS Nitro System": every current family not listed here is Nitro).
XEN_FAMILIES = frozenset(
    {
        "t1", "t2", "m1", "m2", "m3", "m4", "c1", "c3", "c4", "r3", "r4",
        "x1", "x1e", "d2", "h1", "i2", "i3", "p2", "p3", "g2", "g3", "g3s", "f1",
        "cc2", "cr1", "hs1",
    }
)  # fmt: skip
# Metal sizes and a few sizes of Xen families run on Nitro.
NITRO_EXCEPTIONS = frozenset({"m4.16xlarge", "p3dn.24xlarge"})


def hypervisor(instance_type: str) -> str:
    family, _, size = instance_type.partition(".")
    if instance_type in NITRO_EXCEPTIONS or size == "metal":
        return "nitro"
    return "xen" if family in XEN_FAMILIES else "nitro"


@dataclass
class _Post:
    text: str
    at: float  # when the boot wrote it


class Console:
    """What each instance's console shows: the current boot's output."""

    def __init__(self, post_delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.post_delay = post_delay
        self.clock = clock
        self._lock = threading.Lock()
        self._boots: dict[str, list[_Post]] = {}

    def write(self, instance_id: str, text: str) -> None:
        """A boot's output (the emulator calls this, as cloud-init prints)."""
        with self._lock:
            self._boots.setdefault(instance_id, []).append(_Post(text[-MAX_OUTPUT:], self.clock()))

    def output(self, instance_id: str, latest: bool) -> str:
        """Latest: what the current boot printed. Buffered: the newest post old enough."""
        with self._lock:
            posts = self._boots.get(instance_id, [])
            if latest:
                return posts[-1].text if posts else ""
            now = self.clock()
            posted = [p for p in posts if now - p.at >= self.post_delay]
            return posted[-1].text if posted else ""
