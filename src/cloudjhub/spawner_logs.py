"""What the spawner keeps of a worker's log: the tail at each stop and a failed spawn's
message, for `cloudjhub logs` and `cloudjhub status USER` to show once the instance
is stopped (see kept_logs). A mixin of InstanceSpawner, so spawner.py only calls it.

The last failed spawn's message also rides in the spawner's state (until a spawn
succeeds): JupyterHub shows a server's state to whoever holds `admin:server_state`,
so admins read it in the admin page's server row (`/hub/admin`) and the REST API.

Keeping a tail never fails a stop or changes a spawn's error: what cannot be read or
written is logged, and the stop or the failure goes on as before.
"""

from __future__ import annotations

import time
from typing import Any

from traitlets import Unicode, default

from . import remote
from .aws.client import Instance
from .executor import blocking
from .kept_logs import KEPT_LINES, Event, KeptLogs, cut, default_dir
from .spawner_options import InstanceSpawnerOptions
from .ssh_target import pinned_target
from .worker.protocol import posix_username

# A stop waits at most this long for the log's tail: it is a courtesy, not the stop.
TAIL_TIMEOUT = 15.0
TAIL_CONNECT_TIMEOUT = 5.0
# The key of the last failed spawn in the spawner's state (what the admin page shows).
FAILURE_STATE_KEY = "last_spawn_failure"


class KeptLogTails(InstanceSpawnerOptions):
    """Keeps the last lines of a server's log when it stops or fails to spawn."""

    # Provided by InstanceSpawner and JupyterHub's Spawner.
    instance_id: str | None
    user: Any
    name: str

    last_spawn_failure: dict[str, str] | None = None

    kept_logs_dir = Unicode(
        help="Directory where the hub keeps, per user's server, the last "
        f"{KEPT_LINES} lines of its worker's Jupyter log from its last stop, or its "
        "last failed spawn's message: what `cloudjhub logs` prints for a stopped "
        "instance and `cloudjhub status USER` shows. Files are mode 0600. Default: "
        "`kept-logs` beside usage_log.",
    ).tag(config=True)

    @default("kept_logs_dir")
    def _default_kept_logs_dir(self) -> str:
        return default_dir(self.usage_log)

    async def _keep(self, event: Event, lines: list[str]) -> None:
        store = KeptLogs(self.kept_logs_dir)
        try:
            await blocking(store.keep, self.user.name, self.name, self.instance_id, event, lines)
        except (OSError, ValueError) as exc:
            self.log.warning(
                "cannot keep the log tail of %s in %s: %s", self.user.name, store.directory, exc
            )

    async def _keep_failed_spawn(self, message: str) -> None:
        """The message JupyterHub shows (it carries the log's tail when Jupyter failed)."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.last_spawn_failure = {"at": when, "message": "\n".join(cut(message.splitlines()))}
        await self._keep("failed-spawn", message.splitlines())

    def _forget_failed_spawn(self) -> None:
        """A spawn succeeded: the last failure is history (the kept file still has it)."""
        self.last_spawn_failure = None

    def failure_state(self) -> dict[str, Any]:
        return {FAILURE_STATE_KEY: self.last_spawn_failure} if self.last_spawn_failure else {}

    def load_failure_state(self, state: dict[str, Any]) -> None:
        kept = state.get(FAILURE_STATE_KEY)
        self.last_spawn_failure = kept if isinstance(kept, dict) else None

    async def _keep_stop_tail(self, inst: Instance | None) -> None:
        """Before a running instance stops, read its server log's tail over SSH."""
        if inst is None:
            return
        try:
            target = await pinned_target(self, inst, TAIL_CONNECT_TIMEOUT)
            if target is None:
                return  # not running, or never connected to: no log of ours on it
            argv = [*self.worker_command, "log", "--user", posix_username(self.user.name)]
            result = await blocking(
                remote.run_on, target, [*argv, "--lines", str(KEPT_LINES)], b"", TAIL_TIMEOUT
            )
        except Exception as exc:  # a courtesy: never in the way of the stop
            self.log.warning("cannot read the log tail of %s before stopping: %s", inst.id, exc)
            return
        if result.status != 0:
            self.log.warning("cannot read the log tail of %s: %s", inst.id, result.stderr.strip())
            return
        await self._keep("stop", result.stdout.splitlines())
