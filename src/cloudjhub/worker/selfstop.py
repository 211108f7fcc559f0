"""Self-stop: a watchdog next to each server shuts the machine down when nobody uses it.

The loop and its decision are `watchdog`'s, the process that runs it (shutdown
included) `watch_process`'s; this module ties them to the agent: what to watch (from
the start request), starting and ending the watchdog process (``start`` and ``stop`` do).
"""

from __future__ import annotations

import re
import sys

from . import watchdog
from .logs import open_log
from .paths import SYSTEM_PATH, Layout
from .processes import is_alive, spawn_detached, start_time, terminate_group
from .protocol import AgentError, StartRequest
from .record import ServerRecord, WatchdogProcess, write_record
from .watch_process import WATCH_TOKEN_VAR

# The watchdog's own small entry point (no click, no pydantic): it runs as long as the
# server. `cloudjhub-worker watch --user NAME` does the same.
WATCHDOG_MODULE = "cloudjhub.worker.watch_process"
PREFIX_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def watch_target(request: StartRequest) -> watchdog.Target | None:
    """What the watchdog checks, or None when self-stop is off (idle_timeout 0)."""
    if request.idle_timeout <= 0:
        return None
    limit = request.idle_timeout + request.self_stop_grace
    host = f"[{request.ip}]" if ":" in request.ip else request.ip
    prefix = request.env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    if not PREFIX_RE.match(prefix):
        prefix = "/"
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    hub = request.env.get("JUPYTERHUB_API_URL") or ""
    return watchdog.Target(
        status_url=f"http://{host}:{request.port}{prefix}api/status",
        hub_url=hub if hub.startswith(("http://", "https://")) else None,
        limit=float(limit),
        interval=watchdog.check_interval(limit),
    )


def watchdog_pid(record: ServerRecord) -> int | None:
    """The recorded watchdog's pid, if it is still running."""
    dog = record.watchdog
    if dog is None:
        return None
    return dog.pid if is_alive(dog.pid, dog.proc_start) else None


def stop_watchdog(record: ServerRecord) -> None:
    dog = record.watchdog
    if dog is not None and is_alive(dog.pid, dog.proc_start):
        terminate_group(dog.pid, dog.proc_start, 5.0)


def restart_watchdog(
    layout: Layout, request: StartRequest, record: ServerRecord, token: str | None
) -> ServerRecord:
    """(Re)start the server's self-stop watchdog; return the record that names it.

    The watchdog gets the server's token by inheritance, as the server does: nothing
    on disk or on a command line, and its /proc environ is readable only by root
    (its owner). It reads /api/status with it; without one it sees no activity.
    """
    stop_watchdog(record)
    path = layout.record_file(request.user)
    record = record.model_copy(update={"watch": watch_target(request), "watchdog": None})
    write_record(path, record)
    if record.watch is None:
        return record
    env = {
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "CLOUDJHUB_WORKER_ROOT": str(layout.root),
        "CLOUDJHUB_VOLUMES_DIR": str(layout.volumes_dir),
    }
    if token:
        env[WATCH_TOKEN_VAR] = token
    argv = [sys.executable, "-I", "-m", WATCHDOG_MODULE, "--user", request.user]
    with open_log(layout.watch_log_file(request.user)) as log:
        try:
            proc = spawn_detached(argv, cwd="/", env=env, log=log)
        except OSError as exc:
            raise AgentError(f"cannot start the self-stop watchdog: {exc}") from exc
    dog = WatchdogProcess(pid=proc.pid, proc_start=start_time(proc.pid))
    record = record.model_copy(update={"watchdog": dog})
    write_record(path, record)
    return record
