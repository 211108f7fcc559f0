"""Finding every process of an emulated machine from the local cloud's own records.

A real shutdown ends everything on a machine; an emulated one has to find it all:
processes started through its sshd carry the machine's markers in their
environment, the servers the worker agent started (which it gives a clean
environment) are in the agent's records under the machine's root, and sshd
writes its pid file there. None of this asks EC2, so machines can be ended when
EC2 does not answer, or by the guardian after the demo itself was killed.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..worker.paths import Layout
from ..worker.recorded_pids import running_pids
from . import sshd

log = logging.getLogger(__name__)

INSTANCE_ENV = "CLOUDJHUB_INSTANCE_ID"
# Every process of every machine of one local cloud carries FLEET_ENV=<its state dir>.
FLEET_ENV = "CLOUDJHUB_FLEET"


def instances_dir(state_dir: Path) -> Path:
    return state_dir / "instances"


def agent_pids(root: Path) -> list[int]:
    """The Jupyter servers and watchdogs the worker agent recorded on this machine,
    read from its records as its `pids` command reads them (no process started)."""
    return running_pids(Layout.from_env({"CLOUDJHUB_WORKER_ROOT": str(root)}))


def sshd_pid(root: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((root / "run" / "sshd.pid").read_text().strip())
    return None


def machine_pids(root: Path, instance_id: str) -> list[int]:
    """Every live process of one machine, descendants included."""
    pids = sshd.instance_pids(f"{INSTANCE_ENV}={instance_id}") + agent_pids(root)
    pid = sshd_pid(root)
    if pid is not None and _is_our_sshd(pid, root):
        pids.append(pid)
    return sshd.with_descendants(pids)


def fleet_pids(state_dir: Path) -> list[int]:
    """Every live process of every machine of the local cloud kept in `state_dir`."""
    pids = sshd.instance_pids(f"{FLEET_ENV}={state_dir}")
    machines = instances_dir(state_dir)
    roots = sorted(machines.glob("i-*")) if machines.is_dir() else []
    # Side by side: each scans /proc for its markers, hundreds in a storm's fleet.
    with ThreadPoolExecutor(8) as pool:
        for found in pool.map(lambda root: machine_pids(root, root.name), roots):
            pids += found
    return sshd.with_descendants(list(dict.fromkeys(pids)))


def _is_our_sshd(pid: int, root: Path) -> bool:
    """A pid file can outlive its process, and pids are reused: check the command line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(root / "etc" / "ssh" / "sshd_config").encode() in cmdline
