"""What the spawner asks of a worker before it hibernates it: the agent unmounts
the restored folders (worker/restored_unmount.py says why), so that the next start
can detach and delete their volumes at once. A mixin of InstanceSpawner.

Like the log tail before a stop, this is a courtesy: what fails is logged and the
stop goes on (the next start then leaves a folder volume that will not detach for
the start after, as before).
"""

from __future__ import annotations

from . import remote
from .aws.client import Instance
from .executor import blocking
from .profile_spawner import ProfileSpawnerMixin
from .ssh_target import pinned_target

UNMOUNT_TIMEOUT = 15.0
CONNECT_TIMEOUT = 5.0


class HibernationPrep(ProfileSpawnerMixin):
    """Unmounts a worker's restored folders before the spawner hibernates it."""

    async def _before_hibernation(self, inst: Instance | None) -> None:
        if not self.hibernates:  # a spot worker is not hibernated
            return
        try:
            target = await pinned_target(self, inst, CONNECT_TIMEOUT)
            if target is None:
                return
            argv = [*self.worker_command, "unmount-restored"]
            result = await blocking(remote.run_on, target, argv, b"", UNMOUNT_TIMEOUT)
        except Exception as exc:  # never in the way of the stop
            self.log.warning("cannot unmount restored folders before hibernating: %s", exc)
            return
        if result.status != 0:
            self.log.warning("cannot unmount restored folders: %s", result.stderr.strip())
