"""The emulated machines' CPU share: together, no more than one session's.

On AWS every user's instance has CPUs of its own, and nothing a student runs takes a
cycle from the hub. Emulated on one machine, each SSH session and each server the
worker agent starts is a session of its own, and Linux's autogroup scheduler
(`kernel.sched_autogroup_enabled`, sched(7) "The autogroup feature") gives every
session an equal share: with 300 machines busy the hub got one 300th of a core and
its event loop stalled for seconds, which no real deployment would see.

So, where this process may create a cgroup under the cgroup v1 `cpu` controller,
every process the emulator starts for a machine runs in one cgroup of this local
cloud: autogroups apply only to tasks in the root cgroup (sched(7)), so all machines
together weigh as one session against the hub, the proxy and the local cloud, and
use every cycle those leave idle. Where it may not (no such controller, not root),
machines run as before and `reason` says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CPU_CONTROLLER = Path("/sys/fs/cgroup/cpu")
# `sh -c SCRIPT PROCS CMD...`: join the cgroup, then become the command (same pid). A
# cgroup gone meanwhile costs the machine its share, never its start.
_JOIN = 'echo $$ 2>/dev/null > "$0"; exec "$@"'


def share_path(state_dir: Path, controller: Path = CPU_CONTROLLER) -> Path:
    """The cgroup of the local cloud kept in `state_dir` (one name per state dir)."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return controller / f"cloudjhub-machines-{digest}"


def remove_share(path: Path) -> None:
    """Remove a cgroup whose machines have all ended; a busy one is left and logged."""
    with contextlib.suppress(FileNotFoundError):
        try:
            path.rmdir()
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc.strerror)


class MachineShare:
    """One cgroup for all emulated machines of the local cloud kept in `state_dir`."""

    def __init__(self, state_dir: Path, controller: Path = CPU_CONTROLLER) -> None:
        self.path: Path | None = share_path(state_dir, controller)
        self.reason = ""
        try:
            self.path.mkdir(exist_ok=True)
            (self.path / "cgroup.procs").stat()
        except OSError as exc:
            self.reason = f"machines share the CPU with the hub ({controller}: {exc.strerror})"
            self.path = None

    def prefix(self) -> list[str]:
        """What goes before a machine's command so it starts inside the cgroup."""
        if self.path is None:
            return []
        return ["sh", "-c", _JOIN, str(self.path / "cgroup.procs")]

    def close(self) -> None:
        """Remove the cgroup; it must be empty (every machine ended) first."""
        if self.path is not None:
            remove_share(self.path)
