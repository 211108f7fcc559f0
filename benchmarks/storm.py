"""A class of N students logging in at once: the naive strategy beside ours, one run.

    .venv/bin/python benchmarks/storm.py --users N [--light] [--time-scale F]
        [--strategy naive|ours|both] [--json]

For each strategy it starts `cloudjhub demo --like-aws` (AWS's request throttling and
state durations; `--time-scale` shortens the durations, never the refill rates),
then through the hub's REST API with the demo's admin token: N first logins at once
(each user created, then their server requested), waits until every server is
ready (JupyterHub's "took T seconds to start" in the hub's log, read each second) or
has failed (the user list through the REST API, read every 10 s: listing 300 users
each second held the hub's loop for most of it), stops them all, waits until every
instance is stopped, and N restarts at once. It prints per strategy and phase:
failures, makespan, p50/p95 time to ready, EC2 calls by action and the refused ones
(RequestLimitExceeded), both counted by the AWS behaviour layer (`GET
/_cloudjhub/awslike`) and also by caller (the hub, the pool's keeper, the reaper, the
demo: the `cloudjhub/NAME` in each client's User-Agent), the CPU seconds the hub
side, the local cloud and the emulated machines took (`cpu_split`: on AWS the
machines' share runs on their own instances), the hub's event-loop lag p50/p99
(JupyterHub's own
`event_loop_interval_seconds` histogram from /hub/metrics: figures are its bucket
bounds, and 50 ms means "under 50 ms"), and the makespan over the bound AWS's
buckets impose (`storm_figures`' docstring).

- naive: no warm pool, `c.InstanceSpawner.ec2_coalesce_window = 0`,
  `ec2_client_throttle = False`;
- ours: a running warm pool of N (filled before the storm), coalescing (0.5 s) and
  the client-side buckets.

Both run with `c.JupyterHub.concurrent_spawn_limit = max(100, N)`: JupyterHub's
default of 100 turns the 101st simultaneous login away (429), so a class larger than
that sets it, as this does. The traits go in through `cloudjhub demo --hub-config`;
a trait this build does not have is ignored by the hub (traitlets warns in its log),
and the output says which were really in effect.

`--light` runs JupyterHub's test server `jupyterhub.tests.mocksu` (through
`c.InstanceSpawner.cmd`) instead of jupyterhub-singleuser, for N larger than real
servers fit in memory. It answers every GET (the hub's check of the server's URL).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu_split import CpuSplit, split_delta  # after the path is set
from benchmarks.storm_figures import (
    ReadyLog,
    bucket_bound,
    by_caller,
    callers_line,
    histogram_quantile,
    side_by_side,
    summary,
)
from cloudjhub.aws.caller import name_caller
from cloudjhub.local.awslike import buckets
from cloudjhub.local.awslike.settings import PENDING_SECONDS
from cloudjhub.local.demo import DEMO_CLUSTER
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.warm_pool import KEYS_DIR_NAME, ready_members
from tests.system.conftest import Demo, launch_demo

VPC_CIDR = "127.240.0.0/16"  # no system test uses it
LIGHT_CMD = ["python", "-m", "cloudjhub.local.light_server"]
COALESCE_WINDOW = 0.5
LOOP_METRIC = "jupyterhub_event_loop_interval_seconds"
# How often a storm lists every user through the REST API (for failures only).
LIST_EVERY = 10.0
ROWS = [
    "ready",
    "failures",
    "makespan_s",
    "p50_s",
    "p95_s",
    "bound_s",
    "makespan_over_bound",
    "per_call_bound_s",
    "refused",
    "loop_lag_p50_ms",
    "loop_lag_p99_ms",
]
# Below this much available memory the run gives up: the machine is shared.
MIN_AVAILABLE_GIB = 4.0
LOW_MEMORY = threading.Event()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def hub_config(strategy: str, n: int, light: bool) -> dict[str, dict[str, Any]]:
    # AWS's pace, not the demo's quick loopback one: with the demo's 30 s, a machine
    # that boots late in a storm is taken for hung and stopped and started again.
    spawner: dict[str, Any] = {"hang_grace": InstanceSpawner.class_traits()["hang_grace"].default()}
    if light:
        spawner["cmd"] = LIGHT_CMD
    if strategy == "naive":
        spawner |= {"ec2_coalesce_window": 0, "ec2_client_throttle": False}
    else:
        spawner |= {
            "ec2_coalesce_window": COALESCE_WINDOW,
            "ec2_client_throttle": True,
            "warm_pool_size": n,
            "warm_pool_state": "running",
        }
    return {"JupyterHub": {"concurrent_spawn_limit": max(100, n)}, "InstanceSpawner": spawner}


def in_effect(config: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each InstanceSpawner trait asked for: its value, or that this build has no such trait."""
    known = set(InstanceSpawner.class_trait_names())
    return {
        name: (json.dumps(value) if name in known else "ignored: not in this build")
        for name, value in config["InstanceSpawner"].items()
        if name != "cmd"
    }


class Hub:
    """The demo's hub through its REST API, with the admin token."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.headers = {"Authorization": f"token {demo.token}"}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method, self.demo.api + path, headers=self.headers, timeout=300, **kwargs
        )

    def servers(self) -> dict[str, dict[str, Any] | None]:
        """Every user's default server model (None: none), a page of 200 at a time."""
        found: dict[str, dict[str, Any] | None] = {}
        offset = 0
        while True:
            page = self.call("GET", f"/users?offset={offset}&limit=200")
            page.raise_for_status()
            users = page.json()
            for user in users:
                found[user["name"]] = (user.get("servers") or {}).get("")
            if len(users) < 200:
                return found
            offset += 200

    def loop_histogram(self) -> dict[float, float]:
        text = requests.get(
            self.demo.hub_url + "hub/metrics", headers=self.headers, timeout=60
        ).text
        counts: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == LOOP_METRIC:
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        counts[float(sample.labels["le"])] = sample.value
        return counts

    def layer(self) -> dict[str, Any]:
        url = self.demo.facts()["like_aws_control_url"]
        return dict(requests.get(url, timeout=60).json())


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def storm(hub: Hub, users: list[str], create: bool, timeout: float) -> dict[str, Any]:
    """All users ask for their server at once; wait until each is ready or failed.

    Ready: from the hub's log every second (ReadyLog); failed: from the REST API's
    user list, read every LIST_EVERY seconds only."""
    sent: dict[str, float] = {}
    accepted: set[str] = set()
    failed: dict[str, str] = {}
    barrier = threading.Barrier(len(users))
    log = ReadyLog(hub.demo.state_dir / "jupyterhub.log")

    def login(user: str) -> None:
        barrier.wait()
        try:
            if create:
                hub.call("POST", f"/users/{user}")
            sent[user] = time.time()
            reply = hub.call("POST", f"/users/{user}/server")
        except requests.RequestException as exc:
            failed[user] = f"request: {exc}"
            return
        if reply.status_code in (201, 202):
            accepted.add(user)
        else:
            failed[user] = f"HTTP {reply.status_code}: {reply.text[:200]}"

    began = time.time()
    ready: dict[str, float] = {}
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(login, users))  # returns when every request was answered
    deadline = began + timeout
    listed = 0.0
    while len(ready) + len(failed) < len(users) and time.time() < deadline:
        guard()
        for user, when in log.new().items():
            if user in sent and user not in failed:
                ready.setdefault(user, when - sent[user])
        if time.monotonic() - listed >= LIST_EVERY:
            listed = time.monotonic()
            for user, server in hub.servers().items():
                if user not in accepted or user in ready or user in failed:
                    continue
                if server is None:
                    failed[user] = "spawn failed (see the hub's log)"
        time.sleep(1)
    for user in users:
        if user not in ready and user not in failed:
            failed[user] = f"not ready after {timeout:.0f}s"
    last = max((sent[u] + t for u, t in ready.items()), default=began)
    return {"ready": ready, "failed": failed, "makespan": last - began}


def stop_all(hub: Hub, users: list[str], transition: float) -> None:
    with ThreadPoolExecutor(min(len(users), 64)) as pool:
        list(pool.map(lambda u: hub.call("DELETE", f"/users/{u}/server"), users))
    wait_for(lambda: not any(hub.servers().get(u) for u in users), 900, "servers stopped")
    ec2 = hub.demo.ec2()

    def all_stopped() -> bool:
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag-key", "Values": ["cloudjhub:user"]}]
        )
        states = [
            i["State"]["Name"] for p in pages for r in p["Reservations"] for i in r["Instances"]
        ]
        return all(s == "stopped" for s in states)

    wait_for(all_stopped, 900 + transition, "instances stopped")


def guard() -> None:
    if LOW_MEMORY.is_set():
        raise RuntimeError(f"gave up: less than {MIN_AVAILABLE_GIB:g} GiB of memory left")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        guard()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(2)


def wait_for_pool(demo: Demo, n: int) -> None:
    """Until n members are truly ready for the class: running, unclaimed, and their
    host keys recorded by the keeper (where the hub keeps them: beside its usage log)."""
    ec2 = demo.ec2()
    keys_dir = demo.state_dir / KEYS_DIR_NAME

    def full() -> bool:
        ready = len(ready_members(ec2, keys_dir, DEMO_CLUSTER))
        say(f"warm pool: {ready}/{n} running with their host keys recorded")
        return ready >= n

    wait_for(full, 1800, "warm pool filled")


def phase_figures(
    result: dict[str, Any],
    layer: tuple[dict[str, Any], dict[str, Any]],
    loop: tuple[dict[float, float], dict[float, float]],
    bound: tuple[float, float],
) -> dict[str, Any]:
    figures = summary(result["ready"], result["failed"], result["makespan"], bound[0])
    before, after = layer
    lag = {le: loop[1].get(le, 0) - loop[0].get(le, 0) for le in loop[1]}
    return {
        **figures,
        "per_call_bound_s": round(bound[1], 1),
        "ec2_calls": _delta(after["calls"], before["calls"]),
        "refused": sum(_delta(after["throttled"], before["throttled"]).values()),
        # Who made them (aws/caller.py; {} from a layer that does not count callers).
        "ec2_calls_by_caller": by_caller(
            before.get("calls_by_caller", {}), after.get("calls_by_caller", {})
        ),
        "refused_by_caller": by_caller(
            before.get("throttled_by_caller", {}), after.get("throttled_by_caller", {})
        ),
        "loop_lag_p50_ms": round(histogram_quantile(lag, 0.50) * 1000),
        "loop_lag_p99_ms": round(histogram_quantile(lag, 0.99) * 1000),
        "why_failed": sorted(set(result["failed"].values()))[:5],
    }


def bounds(action: str, n: int, time_scale: float) -> tuple[float, float]:
    """(AWS's bound, one call per instance's bound) for n instances through `action`."""
    transition = PENDING_SECONDS * time_scale
    capacity, refill = buckets.RESOURCE_BUCKETS[action]
    call_capacity, call_refill = buckets.UNCATEGORIZED[action]
    return (
        bucket_bound(n, capacity, refill, transition),
        max(
            bucket_bound(n, capacity, refill, transition),
            bucket_bound(n, call_capacity, call_refill, transition),
        ),
    )


def run_strategy(strategy: str, n: int, light: bool, time_scale: float) -> dict[str, Any]:
    config = hub_config(strategy, n, light)
    users = [f"student{i:03d}" for i in range(1, n + 1)]
    with tempfile.TemporaryDirectory(prefix=f"cloudjhub-storm-{strategy}-") as tmp:
        state = Path(tmp)
        config_file = state / "storm-hub-config.json"
        config_file.write_text(json.dumps(config))
        say(f"{strategy}: starting the demo ({state})")
        demo = launch_demo(
            state,
            3600,
            VPC_CIDR,
            "--like-aws",
            "--time-scale",
            f"{time_scale:g}",
            "--hub-config",
            str(config_file),
        )
        split: CpuSplit | None = None
        try:
            split = CpuSplit(state, demo.proc.pid)
            hub = Hub(demo)
            if strategy == "ours":
                wait_for_pool(demo, n)
            out: dict[str, Any] = {"in_effect": in_effect(config)}
            timeout = 600 + 3 * n
            for phase, action, create in (
                ("first logins", "RunInstances", True),
                ("restarts", "StartInstances", False),
            ):
                if phase == "restarts":
                    say(f"{strategy}: stopping all {n}")
                    stop_all(hub, users, PENDING_SECONDS * time_scale)
                say(f"{strategy}: {n} {phase} at once")
                layer0, loop0, cpu0 = hub.layer(), hub.loop_histogram(), split.snapshot()
                result = storm(hub, users, create, timeout)
                layer1, loop1, cpu1 = hub.layer(), hub.loop_histogram(), split.snapshot()
                out[phase] = phase_figures(
                    result, (layer0, layer1), (loop0, loop1), bounds(action, n, time_scale)
                )
                out[phase]["cpu_s"] = split_delta(cpu1, cpu0)
                say(f"{strategy} {phase}: {out[phase]}")
            log = (state / "jupyterhub.log").read_text(errors="replace")
            out["hub_warnings"] = sorted(
                {
                    line.split("]", 1)[-1].strip()
                    for line in log.splitlines()
                    if "not recognized" in line
                }
            )
            return out
        finally:
            if split is not None:
                split.stop()
            say(f"{strategy}: stopping the demo")
            demo.proc.send_signal(signal.SIGTERM)
            try:
                demo.proc.wait(timeout=900)
            except subprocess.TimeoutExpired:
                demo.proc.kill()
                demo.proc.wait()


class Machine:
    """How loaded this machine was meanwhile: lowest MemAvailable, highest load."""

    def __init__(self) -> None:
        self.min_available_gib = math.inf
        self.max_load = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(2):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    gib = int(line.split()[1]) / 2**20
                    self.min_available_gib = min(self.min_available_gib, gib)
                    if gib < MIN_AVAILABLE_GIB:
                        LOW_MEMORY.set()
            self.max_load = max(self.max_load, os.getloadavg()[0])

    def __enter__(self) -> Machine:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()


def main() -> None:
    name_caller("storm")  # any EC2 client of its own is counted apart from the hub's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--light", action="store_true")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--strategy", choices=["naive", "ours", "both"], default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.users < 1 or not (math.isfinite(args.time_scale) and args.time_scale > 0):
        parser.error("--users must be at least 1 and --time-scale a positive number")
    strategies = ["naive", "ours"] if args.strategy == "both" else [args.strategy]
    began = time.monotonic()
    results: dict[str, Any] = {}
    with Machine() as machine:
        for strategy in strategies:
            results[strategy] = run_strategy(strategy, args.users, args.light, args.time_scale)
    report = {
        "users": args.users,
        "server": "jupyterhub.tests.mocksu via cloudjhub.local.light_server (--light)"
        if args.light
        else "jupyterhub-singleuser",
        "time_scale": args.time_scale,
        "concurrent_spawn_limit": max(100, args.users),
        "strategies": results,
        "machine": {
            "cpus": os.cpu_count(),
            "min_mem_available_gib": round(machine.min_available_gib, 1),
            "max_load_1min": round(machine.max_load, 1),
        },
        "seconds": round(time.monotonic() - began),
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(
        f"{args.users} students at once; server: {report['server']}; --like-aws, time scale "
        f"{args.time_scale:g} (pending {PENDING_SECONDS * args.time_scale:g}s); "
        f"concurrent_spawn_limit {report['concurrent_spawn_limit']}"
    )
    for strategy, out in results.items():
        traits = ", ".join(f"{k}={v}" for k, v in out["in_effect"].items())
        print(f"{strategy}: {traits}")
        for warning in out["hub_warnings"]:
            print(f"  hub: {warning}")
    columns = {f"{s} {p}": results[s][p] for s in results for p in ("first logins", "restarts")}
    print(side_by_side(columns, ROWS))
    for column, figures in columns.items():
        calls = " ".join(f"{k}={v}" for k, v in sorted(figures["ec2_calls"].items()))
        print(f"EC2 calls, {column}: {calls}")
        print(f"EC2 calls by caller, {column}: {callers_line(figures['ec2_calls_by_caller'])}")
        print(f"refused by caller, {column}: {callers_line(figures['refused_by_caller'])}")
        cpu = ", ".join(f"{group} {seconds:g}" for group, seconds in figures["cpu_s"].items())
        available = figures["makespan_s"] * (os.cpu_count() or 1)
        print(f"CPU seconds, {column}: {cpu} (of {available:.0f} in the makespan on all cores)")
        for why in figures["why_failed"]:
            print(f"{column} failed: {why}")
    print(
        f"bound: AWS's resource bucket + pending (RunInstances for first logins, StartInstances "
        f"for restarts); per_call_bound: one call per instance. Loop lag: JupyterHub's "
        f"histogram bucket bounds. Machine: {report['machine']}; took {report['seconds']}s"
    )


if __name__ == "__main__":
    main()
