"""EBS volume modifications that take time, as on AWS.

moto completes a ModifyVolume at once and takes the next one straight away. AWS
goes through `modifying` and `optimizing` to `completed`, and "after you initiate
a volume modification, you must wait for that modification to reach the completed
state before you can initiate another modification for the same volume" (EC2 API
Reference, ModifyVolume); a second request meanwhile fails with
IncorrectModificationState (EC2 API Reference, "Error codes for the Amazon EC2
API"). `refuse` says so until the modification's time is up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Modifications:
    """Volume modifications in progress: volume id -> when they complete."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def begin(self, volume_id: str) -> None:
        with self._lock:
            self._until[volume_id] = self.clock() + self.seconds

    def in_progress(self, volume_id: str) -> bool:
        with self._lock:
            until = self._until.get(volume_id)
            if until is not None and self.clock() >= until:
                del self._until[volume_id]
                until = None
            return until is not None

    def refuse(self, volume_id: str) -> str | None:
        """The IncorrectModificationState message for a volume still being modified."""
        if volume_id and self.in_progress(volume_id):
            return f"Volume {volume_id} cannot be modified in modification state OPTIMIZING"
        return None
