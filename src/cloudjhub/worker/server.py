"""The user's Jupyter server: start it (or keep a resumed one), stop it, report it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import home_space, releases, shared_mount
from .accounts import RunAs, prepare_home
from .logs import log_header, open_log, short_tail
from .nfs_guard import ensure_nfs_guard
from .paths import SYSTEM_PATH, Layout
from .processes import (
    POLL_SECONDS,
    is_alive,
    process_env,
    signal_group,
    spawn_detached,
    start_time,
    terminate_group,
)
from .protocol import (
    EXIT_SERVER_EXITED,
    EXIT_SERVER_TIMEOUT,
    TOKEN_VARS,
    AgentError,
    StartReply,
    StartRequest,
    bad_request,
)
from .record import ServerRecord, read_record, remove_record, write_record
from .selfstop import restart_watchdog, stop_watchdog, watch_target

JUPYTER_CONFIG_DIR = Path(__file__).resolve().parent / "jupyter_config"
DEFAULT_STOP_TIMEOUT = 10.0
FAILURE_TAIL_LINES = 40


# --------------------------------------------------------------------------- start


def start_server(layout: Layout, request: StartRequest) -> StartReply:
    """Start (or restart) the user's server and wait until it accepts connections."""
    if not layout.emulated:  # before anything a student's processes could use
        ensure_nfs_guard()
    argv = resolve_command(request.cmd)
    watch_target(request)  # what the watchdog needs is checked before anything starts
    if request.resume:
        kept = resume_server(layout, request, argv)
        if kept is not None:
            return kept
    # Each spawn carries a fresh API token, so an old server is otherwise replaced.
    stop_server(layout, request.user, DEFAULT_STOP_TIMEOUT)
    run_as = prepare_home(layout, request)
    if request.restored_folder is not None:
        home_space.restore_folder(layout, run_as.home, request.restored_folder)
    space = home_space.check_space(layout, run_as.home, request.home_volume)
    releases.deliver(layout, request, run_as)
    shared_mount.mount_shared(layout, request.user, request.shared, run_as)
    if port_open(request.ip, request.port, 1.0):
        raise AgentError(f"port {request.port} on {request.ip} is already in use")
    proc, offset = launch(layout, request, server_argv(layout, argv), run_as)
    path = layout.record_file(request.user)
    record = ServerRecord(
        pid=proc.pid,
        ip=request.ip,
        port=request.port,
        started=int(time.time()),
        proc_start=start_time(proc.pid),
        spec=server_spec(request, argv),
    )
    write_record(path, record)
    outcome = wait_until_listening(proc, request.ip, request.port, request.timeout)
    if outcome == "ready":
        try:
            restart_watchdog(layout, request, record, request.env.get("JUPYTERHUB_API_TOKEN"))
        except Exception:
            # A server nobody watches could keep its instance running for ever.
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            remove_record(path, proc.pid)
            raise
        return StartReply(
            pid=proc.pid,
            ip=request.ip,
            port=request.port,
            home_used=space.used if space else None,
            home_size=space.size if space else None,
        )
    signal_group(proc.pid, signal.SIGKILL)
    status = proc.wait()
    remove_record(path, proc.pid)
    log = layout.log_file(request.user)
    if outcome == "exited":
        headline = f"Jupyter exited with status {status}"
        raise AgentError(failure_message(headline, log, offset), EXIT_SERVER_EXITED)
    headline = f"Jupyter did not listen on {request.ip}:{request.port} within {request.timeout:g}s"
    raise AgentError(failure_message(headline, log, offset), EXIT_SERVER_TIMEOUT)


def resolve_command(cmd: Sequence[str]) -> list[str]:
    """Prefer our own venv's scripts so the server matches the agent's installation."""
    name = cmd[0]
    if os.path.isabs(name):
        found = name if os.access(name, os.X_OK) and os.path.isfile(name) else None
    else:
        local = os.path.join(agent_bin_dir(), name)
        found = local if os.sep not in name and os.access(local, os.X_OK) else None
        found = found or shutil.which(name)
    if not found:
        bad_request(f"invalid cmd: command not found: {name}")
    return [found, *cmd[1:]]


def agent_bin_dir() -> str:
    """The agent's own bin dir (not symlink-resolved: that would leave the venv)."""
    return os.path.dirname(sys.executable)


def child_environment(request: StartRequest, run_as: RunAs) -> dict[str, str]:
    """A minimal environment: nothing from the SSH session leaks into the server."""
    env = {
        "PATH": f"{agent_bin_dir()}:{SYSTEM_PATH}",
        "HOME": str(run_as.home),
        "USER": run_as.name,
        "LOGNAME": run_as.name,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
    }
    env.update(request.env)
    # Enable our jupyter_server extension (busy kernels count as activity)
    # without hiding any config path the image or the hub set.
    extra = [str(JUPYTER_CONFIG_DIR)]
    if env.get("JUPYTER_CONFIG_PATH"):
        extra.append(env["JUPYTER_CONFIG_PATH"])
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(extra)
    return env


def server_argv(layout: Layout, argv: list[str]) -> list[str]:
    """jupyter_server refuses to run as root unless told; only the emulator runs it so."""
    if layout.emulated and os.geteuid() == 0 and "--allow-root" not in argv:
        return [*argv, "--allow-root"]
    return argv


def port_open(ip: str, port: int, timeout: float) -> bool:
    """Whether something accepts TCP connections on ip:port."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def launch(
    layout: Layout, request: StartRequest, argv: list[str], run_as: RunAs
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server detached from the SSH session; return it and its log offset."""
    with open_log(layout.log_file(request.user)) as log:
        log.write(log_header(request, argv))
        log.flush()
        offset = log.tell()
        try:
            proc = spawn_detached(
                argv,
                cwd=run_as.home,
                env=child_environment(request, run_as),
                log=log,
                uid=run_as.uid,
                gid=run_as.gid,
            )
        except OSError as exc:
            raise AgentError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    return proc, offset


def wait_until_listening(proc: subprocess.Popen[bytes], ip: str, port: int, timeout: float) -> str:
    """Return "ready", "exited" or "timeout"."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return "exited"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        if port_open(ip, port, min(1.0, remaining)):
            return "exited" if proc.poll() is not None else "ready"
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def failure_message(headline: str, log: Path, offset: int) -> str:
    """The headline plus this run's last log lines, for the hub to show the user."""
    lines = short_tail(log, FAILURE_TAIL_LINES, start=offset)
    return "\n".join([f"{headline}; last lines of its log:", *lines])


# --------------------------------------------------------------------------- resume


def server_spec(request: StartRequest, argv: Sequence[str]) -> str:
    """A digest of what makes the server what it is, leaving out the per-spawn token."""
    env = {k: v for k, v in request.env.items() if k not in TOKEN_VARS}
    volume = request.home_volume
    spec = {
        "argv": list(argv),
        "env": env,
        "ip": request.ip,
        "port": request.port,
        "home_volume": [volume.volume_id, volume.device] if volume else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def resume_server(layout: Layout, request: StartRequest, argv: Sequence[str]) -> StartReply | None:
    """Keep a server that survived a hibernation, kernels and all; None: start afresh.

    A running jupyterhub-singleuser cannot take the new API token this spawn brings,
    so instead the hub adopts the token the server already has: JupyterHub kept it
    (the spawner says will_resume), and it checks that the token is this user's.
    The server is only kept if the request asks for exactly the same server.
    """
    record = read_record(layout.record_file(request.user))
    if record is None or not is_alive(record.pid, record.proc_start):
        return None
    # The token the server really runs with: its own environment is the truth.
    token = process_env(record.pid, "JUPYTERHUB_API_TOKEN")
    if not token or record.spec != server_spec(request, argv):
        return None
    if not port_open(request.ip, request.port, 5.0):
        return None
    record = record.model_copy(update={"resumed": int(time.time())})
    restart_watchdog(layout, request, record, token)
    # The token goes back over the SSH channel it came in on; never printed elsewhere.
    return StartReply(
        pid=record.pid, ip=request.ip, port=request.port, resumed=True, api_token=token
    )


# --------------------------------------------------------------------------- stop, status


def stop_server(layout: Layout, user: str, timeout: float) -> bool:
    """Stop the user's recorded server and its watchdog; return whether a server ran."""
    path = layout.record_file(user)
    record = read_record(path)
    if record is None:
        remove_record(path)
        return False
    stop_watchdog(record)
    running = is_alive(record.pid, record.proc_start)
    if running:
        terminate_group(record.pid, record.proc_start, timeout)
    remove_record(path, record.pid)
    return running


def server_status(layout: Layout, user: str) -> dict[str, object]:
    """The recorded server, with ``running`` checked against the live process table."""
    record = read_record(layout.record_file(user))
    if record is None:
        return {"running": False, "pid": None, "ip": None, "port": None, "started": None}
    return {
        "running": is_alive(record.pid, record.proc_start),
        "pid": record.pid,
        "ip": record.ip,
        "port": record.port,
        "started": record.started,
    }
