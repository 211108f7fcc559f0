"""Where a storm's CPU went: the hub, the local cloud, the emulated machines, the rest.

On AWS every user's instance has CPUs of its own; in `storm.py` all emulated machines
(their sshd sessions, `cloudjhub-worker`, watchdogs, servers) share this machine's
cores with the hub and the local cloud. This samples /proc every half second and
charges each process's own CPU time (utime + stime) to one group, so a phase's
figures say how much of the machine each part took. A process that starts and ends
between two samples is missed; its time shows in `unattributed` (the machine's busy
time in /proc/stat minus everything charged).

Groups, by what a process shows of the demo's state dir (`<state>`):
- machines: `<state>/instances` in its command line, environment or working directory;
- local cloud: the demo process itself (moto, the like-AWS layer, the emulator);
- hub side: any other process that names `<state>` (the hub, its proxy, the pool
  keeper, the reaper, the idle culler);
- storm: this process; other: everything else on the machine (other people's work).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

GROUPS = ("hub side", "local cloud", "machines", "storm", "other", "unattributed")
TICK = os.sysconf("SC_CLK_TCK")
INTERVAL = 0.5


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle (nor waiting for I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


class CpuSplit:
    """Samples in a thread; `snapshot()` gives CPU seconds per group so far."""

    def __init__(self, state_dir: Path, demo_pid: int) -> None:
        self.state = str(state_dir).encode()
        self.machines = str(state_dir / "instances").encode()
        self.demo_pid = demo_pid
        self._group: dict[tuple[int, bytes], str] = {}
        self._cpu: dict[tuple[int, bytes], float] = {}
        self._base: dict[tuple[int, bytes], float] = {}
        self._busy0 = machine_busy_seconds()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-split", daemon=True)
        self._sample(first=True)
        self._thread.start()

    def _classify(self, pid: int) -> str:
        if pid == os.getpid():
            return "storm"
        if pid == self.demo_pid:
            return "local cloud"
        where = b"\0".join(
            (
                _read(f"/proc/{pid}/cmdline"),
                _read(f"/proc/{pid}/environ"),
                os.fsencode(_readlink(f"/proc/{pid}/cwd")),
            )
        )
        if self.machines in where:
            return "machines"
        if self.state in where:
            return "hub side"
        return "other"

    def _sample(self, first: bool = False) -> None:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            stat = _read(f"/proc/{name}/stat")
            if not stat:
                continue
            rest = stat[stat.rindex(b")") + 2 :].split()
            key = (int(name), rest[19])  # pid and start time: pids are reused
            cpu = (int(rest[11]) + int(rest[12])) / TICK
            with self._lock:
                if key not in self._group:
                    self._group[key] = self._classify(int(name))
                    if first:
                        self._base[key] = cpu  # only what it spends from now on
                self._cpu[key] = cpu

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._sample()

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            totals: dict[str, float] = dict.fromkeys(GROUPS, 0.0)
            for key, cpu in self._cpu.items():
                totals[self._group[key]] += cpu - self._base.get(key, 0.0)
        busy = machine_busy_seconds() - self._busy0
        totals["unattributed"] = max(0.0, busy - sum(totals.values()))
        return {group: totals[group] for group in GROUPS}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def split_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """CPU seconds per group between two snapshots, rounded for printing."""
    return {group: round(after[group] - before.get(group, 0.0), 1) for group in GROUPS}
