"""The pids the agent recorded under an instance root: its running servers and watchdogs.

The agent's `pids` command prints them. The local cloud, which plays the machine,
reads the same records in its own process (`local/processes.py`): halting a
machine then starts no process, where a storm's halts started hundreds.
"""

from __future__ import annotations

from .paths import Layout
from .processes import is_alive
from .record import all_records
from .selfstop import watchdog_pid


def running_pids(layout: Layout) -> list[int]:
    """Every running server and watchdog recorded under the root, sorted."""
    alive = []
    for record in all_records(layout):
        if is_alive(record.pid, record.proc_start):
            alive.append(record.pid)
        dog = watchdog_pid(record)
        if dog is not None:
            alive.append(dog)
    return sorted(alive)
