"""What the agent costs an instance per server start: the self-stop watchdog's
process and `cloudjhub-worker start`, in CPU seconds and RSS, side by side.

    .venv/bin/python benchmarks/agent_start.py [--runs 10] [--baseline-src DIR]

(a) The watchdog, started as `start` starts it, against a recorded server, until its
first round is over: the new entry (`python -I -m cloudjhub.worker.watch_process`)
and the command line it replaced (`python -I -m cloudjhub.worker.cli watch`, still
there). (b) `cloudjhub-worker start` of a light server (JupyterHub's mocksu, as
`storm.py --light` runs it) with self-stop on, in emulated mode
(CLOUDJHUB_WORKER_ROOT), then `stop`, repeated. Floor: a bare `python -c pass`.

CPU is each process's own, from wait4's rusage (user + system): what `start` spawns
detached (the server, the watchdog) is not counted in it, so (a) measures the
watchdog alone. RSS is the watchdog's VmRSS once it watches (/proc), against a bare
idle python (rusage's ru_maxrss would include the benchmark's own memory, from
before the child's exec). With --baseline-src pointing at another checkout's src/
(e.g. `git worktree add /tmp/old main`), the same runs of that code are printed too
(through PYTHONPATH, so its watchdog runs without -I: a few ms of site setup).
Medians; nothing is asserted. Everything started is ended by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloudjhub.local.ports import free_port

PY = sys.executable
USER = "bench"


def measured(
    argv: Sequence[str], env: dict[str, str], stdin: bytes = b""
) -> tuple[float, int, bytes]:
    """Run argv to its end: (CPU seconds, exit status, stdout)."""
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    data = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, proc.returncode, data


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def environment(root: Path, baseline: Path | None) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "CLOUDJHUB_WORKER_ROOT": str(root)}
    if baseline:
        env["PYTHONPATH"] = str(baseline)
    return env


def write_watched_record(root: Path) -> Path:
    """A server record whose watch reads a port nothing listens on, without a hub."""
    record = {
        "pid": os.getpid(),
        "ip": "127.0.0.1",
        "port": 9,
        "started": int(time.time()),
        "spec": "benchmark",
        "watch": {
            "status_url": f"http://127.0.0.1:{free_port()}/api/status",
            "hub_url": None,
            "limit": 3600.0,
            "interval": 1.0,
        },
    }
    path = root / "run" / "cloudjhub" / f"{USER}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def one_watchdog(
    argv: list[str], root: Path, env: dict[str, str], ended: bytes = b"watch ended: the server"
) -> tuple[float, float]:
    """Start a watchdog, let it start watching, end its watch (record gone), measure it."""
    path = write_watched_record(root)
    log = root / "watch.log"
    log.write_bytes(b"")
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while b"watching " not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv}: {log.read_text()[-500:]}")
            time.sleep(0.05)
        rss = vm_rss_mb(proc.pid)
        path.unlink()
        if not ended:  # the floor: it would sleep on
            proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    if ended not in log.read_bytes():
        raise RuntimeError(f"{argv}: {log.read_text()[-500:]}")
    return usage.ru_utime + usage.ru_stime, rss


def start_request() -> bytes:
    port = free_port()
    return json.dumps(
        {
            "user": USER,
            "ip": "127.0.0.1",
            "port": port,
            "env": {
                "JUPYTERHUB_API_TOKEN": secrets.token_hex(16),
                "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/{USER}/",
                "JUPYTERHUB_SERVICE_PREFIX": f"/user/{USER}/",
                "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
            },
            "cmd": ["python", "-m", "cloudjhub.local.light_server"],
            "timeout": 60,
            "idle_timeout": 3600,
            "self_stop_grace": 0,
        }
    ).encode()


def one_start(agent: list[str], env: dict[str, str]) -> tuple[float, float]:
    """`start` of a light server (and its watchdog), measured; then `stop`."""
    try:
        cpu, status, out = measured([*agent, "start"], env, start_request())
        if status != 0:
            raise RuntimeError(f"start exited {status}: {out[-500:]!r}")
    finally:
        measured([*agent, "stop", "--user", USER, "--timeout", "5"], env)
    return cpu, 0.0


def median_of(
    runs: int, one: Callable[..., tuple[float, float]], *args: object
) -> tuple[float, float]:
    results = [one(*args) for _ in range(runs)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def row(name: str, cpu: float, rss: float, floor: tuple[float, float]) -> str:
    line = f"  {name:<58} {cpu * 1000:7.0f} ms {cpu / floor[0]:5.1f}x"
    return line + (f"   {rss:6.1f} MB {rss / floor[1]:4.1f}x" if rss else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline-src", type=Path, help="Another checkout's src/ to compare.")
    args = parser.parse_args()
    baseline = args.baseline_src.resolve() if args.baseline_src else None
    if baseline and not (baseline / "cloudjhub" / "worker" / "cli.py").is_file():
        parser.error(f"--baseline-src {baseline}: no cloudjhub/worker/cli.py there")
    n = args.runs
    with tempfile.TemporaryDirectory(prefix="agent-start-") as tmp:
        root = Path(tmp) / "instance"
        root.mkdir()
        env = environment(root, None)
        print(f"agent_start: {n} runs each, medians; python {sys.version.split()[0]}")
        print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
        print(f"  {'':<58} {'CPU':>10} {'/floor':>6}   {'RSS':>9} {'/floor':>5}")
        cpu_floor = statistics.median(measured([PY, "-I", "-c", "pass"], env)[0] for _ in range(n))
        idle = "print('watching ', flush=True); import time; time.sleep(60)"
        rss_floor = median_of(n, one_watchdog, [PY, "-I", "-c", idle], root, env, b"")[1]
        floor = (cpu_floor, rss_floor)
        print(row("floor: python -I -c pass (RSS: idle)", *floor, floor))
        print("(a) the self-stop watchdog, one per running server:")
        dogs = {
            "new: python -I -m cloudjhub.worker.watch_process": [
                PY, "-I", "-m", "cloudjhub.worker.watch_process", "--user", USER,
            ],
            "this build: python -I -m cloudjhub.worker.cli watch": [
                PY, "-I", "-m", "cloudjhub.worker.cli", "watch", "--user", USER,
            ],
        }  # fmt: skip
        dog = {}
        for name, argv in dogs.items():
            dog[name] = median_of(n, one_watchdog, argv, root, env)
            print(row(name, *dog[name], floor))
        if baseline:
            old_env = environment(root, baseline)
            argv = [PY, "-m", "cloudjhub.worker.cli", "watch", "--user", USER]
            old = median_of(n, one_watchdog, argv, root, old_env)
            print(row("baseline: python -m cloudjhub.worker.cli watch", *old, floor))
            new = dog["new: python -I -m cloudjhub.worker.watch_process"]
            print(f"  new / baseline: CPU {new[0] / old[0]:.2f}x, RSS {new[1] / old[1]:.2f}x")
        print("(b) cloudjhub-worker start of a light server (self-stop on), then stop:")
        agent = [PY, "-m", "cloudjhub.worker.cli"]
        started = median_of(n, one_start, agent, env)
        print(row("this build: start", *started, floor))
        if baseline:
            old_start = median_of(n, one_start, agent, environment(root, baseline))
            print(row("baseline: start", *old_start, floor))
            print(f"  this build / baseline: CPU {started[0] / old_start[0]:.2f}x")
            ours = started[0] + dog["new: python -I -m cloudjhub.worker.watch_process"][0]
            theirs = old_start[0] + old[0]
            print(
                f"per login, start + its watchdog's start: {ours * 1000:.0f} ms vs "
                f"{theirs * 1000:.0f} ms of CPU ({ours / theirs:.2f}x)"
            )
        print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
