"""The agent's processes import only what they need: the watchdog (one per running
server, for its whole life) neither click nor pydantic, and the commands that read no
start request no pydantic. Checked on the real processes, by what they import (never
by time); every process started is ended by pid (Instance's teardown).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudjhub.worker import commands, server
from cloudjhub.worker.record import read_record
from cloudjhub.worker.watch_process import parse_watched
from tests.unit.worker_harness import AGENT, FakeHub, Instance

HEAVY = ("click", "pydantic", "pydantic_core")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    yield from Instance.running(tmp_path)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    yield from FakeHub.running()


def imported(
    argv: list[str], root: Path, stdin: str = ""
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``argv`` with -X importtime against ``root``: its result and what it imported."""
    env = {"PATH": os.environ["PATH"], "CLOUDJHUB_WORKER_ROOT": str(root)}
    env["CLOUDJHUB_VOLUMES_DIR"] = str(root.parent / "volumes")
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
        check=False,
    )
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return done, names


def heavy(names: set[str]) -> set[str]:
    return {name for name in names if name.split(".")[0] in HEAVY}


def test_the_watchdog_that_start_runs_imports_neither_click_nor_pydantic(
    instance: Instance, hub: FakeHub
) -> None:
    instance.start(instance.request("busy", hub.url, idle_timeout=600))
    dog = instance.record()["watchdog"]["pid"]
    # The running watchdog itself: pydantic's compiled core is not in its memory.
    assert "_pydantic_core" not in Path(f"/proc/{dog}/maps").read_text()
    # Its exact command line, run again: it finds another watchdog recorded and ends,
    # having imported what the watchdog imports.
    argv = Path(f"/proc/{dog}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    done, names = imported(argv, instance.root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "watch ended: the server is no longer recorded" in done.stdout
    assert "cloudjhub.worker.watchdog" in names
    assert heavy(names) == set()


def test_start_as_the_hub_runs_it_imports_no_click(instance: Instance, hub: FakeHub) -> None:
    """The hub's call on every login: the request checked by protocol (pydantic), as
    strictly as ever, but no command-line parser for a command that takes no options."""
    request = instance.request("busy", hub.url, idle_timeout=600)
    done, names = imported([*AGENT, "start"], instance.root, json.dumps(request))
    assert done.returncode == 0, done.stderr[-2000:]
    instance.pids.update([json.loads(done.stdout)["pid"], *instance.agent_pids()])
    assert "cloudjhub.worker.protocol" in names
    assert {name for name in heavy(names) if name.split(".")[0] == "click"} == set()
    bad, names = imported([*AGENT, "start"], instance.root, json.dumps({**request, "port": "1"}))
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1].startswith("cloudjhub-worker: ")
    assert "port" in bad.stderr.splitlines()[-1]
    assert "click" not in names


def test_the_watch_command_still_watches_and_both_entries_check_the_user(
    instance: Instance,
) -> None:
    entries = [[*AGENT, "watch"], [sys.executable, "-I", "-m", "cloudjhub.worker.watch_process"]]
    for entry in entries:
        done = subprocess.run(
            [*entry, "--user", "alice"],
            capture_output=True,
            text=True,
            env={**os.environ, "CLOUDJHUB_WORKER_ROOT": str(instance.root)},
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.endswith("watch ended: nothing to watch\n")
        bad = subprocess.run(
            [*entry, "--user", "../root"],
            capture_output=True,
            text=True,
            env={**os.environ, "CLOUDJHUB_WORKER_ROOT": str(instance.root)},
            timeout=60,
            check=False,
        )
        assert bad.returncode == 2
        assert "'../root' must match" in bad.stderr
        assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("command", "needs_pydantic"),
    [
        (["releases"], False),
        (["unmount-shared"], False),
        (["unmount-restored"], False),
        (["log", "--user", "alice"], False),
        (["pids"], True),  # reads the records (pydantic models)
    ],
)
def test_commands_import_pydantic_only_when_they_read_its_models(
    tmp_path: Path, command: list[str], needs_pydantic: bool
) -> None:
    done, names = imported([*AGENT, *command], tmp_path / "instance")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cloudjhub.worker.contract" in names  # it ran the agent
    assert bool({"pydantic", "pydantic_core"} & names) == needs_pydantic


def test_the_agent_skips_pydantics_plugin_scan_unless_told_otherwise(tmp_path: Path) -> None:
    show = (
        "import atexit, os, sys\n"
        "atexit.register(lambda: print(os.environ.get('PYDANTIC_DISABLE_PLUGINS')))\n"
        "from cloudjhub.worker.cli import main\n"
        "main(['releases'])\n"
    )
    env = {"PATH": os.environ["PATH"], "CLOUDJHUB_WORKER_ROOT": str(tmp_path / "instance")}
    for given, seen in [(None, "__all__"), ("logfire", "logfire")]:
        extra = {} if given is None else {"PYDANTIC_DISABLE_PLUGINS": given}
        done = subprocess.run(
            [sys.executable, "-c", show],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == seen


def test_stop_default_is_the_servers() -> None:
    stop = next(p for p in commands.cli.commands["stop"].params if p.name == "timeout")
    assert stop.default == server.DEFAULT_STOP_TIMEOUT == commands.DEFAULT_STOP_TIMEOUT


GOOD = {"pid": 10, "ip": "127.0.0.1", "port": 8888, "started": 100, "spec": "x"}
WATCH = {"status_url": "http://127.0.0.1:8888/api/status", "hub_url": None, "limit": 2.0}


@pytest.mark.parametrize(
    "record",
    [
        GOOD,
        {**GOOD, "resumed": 200, "proc_start": 5, "watchdog": {"pid": 11}},
        {**GOOD, "watch": {**WATCH, "interval": 1}, "watchdog": {"pid": 11, "proc_start": None}},
        {**GOOD, "watch": {**WATCH, "interval": 1.0, "hub_url": "http://h/hub/api"}},
        {**GOOD, "watch": WATCH},
        {**GOOD, "watch": {**WATCH, "interval": 1, "status_url": 5}},
        {**GOOD, "watch": [1]},
        {**GOOD, "watchdog": {}},
        {**GOOD, "resumed": "soon"},
        {**GOOD, "proc_start": 1.5},
        {key: value for key, value in GOOD.items() if key != "spec"},
        {**GOOD, "pid": None},
        {**GOOD, "ip": 127},
        [GOOD],
        "not json",
    ],
)
def test_the_watchdog_reads_a_record_as_the_agent_does(tmp_path: Path, record: object) -> None:
    """The watchdog's pydantic-free reader agrees with record.read_record."""
    path = tmp_path / "alice.json"
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    full = read_record(path)
    mine = parse_watched(path.read_bytes())
    assert (mine is None) == (full is None)
    if full is not None and mine is not None:
        assert mine.since == full.since
        assert mine.watch == full.watch
        assert mine.watchdog_pid == (full.watchdog.pid if full.watchdog else None)


@pytest.mark.parametrize(
    "record",
    [
        {**GOOD, "watch": {**WATCH, "interval": "1"}},
        {**GOOD, "watchdog": {"pid": "11"}},
        {**GOOD, "started": "100"},
    ],
)
def test_numbers_as_strings_are_not_a_record_the_agent_wrote(record: object) -> None:
    """Stricter than pydantic's lax mode, which takes "11" for 11: the agent writes numbers."""
    assert parse_watched(json.dumps(record).encode()) is None


def test_protocol_models_are_built_when_first_used_not_at_import() -> None:
    """defer_build: a command that reads no request pays no schema build for it."""
    show = (
        "from cloudjhub.worker import protocol as p\n"
        "print(p.StartRequest.__pydantic_complete__, p.StartReply.__pydantic_complete__)\n"
        "p.StartReply(pid=1, ip='127.0.0.1', port=8000)\n"
        "print(p.StartReply.__pydantic_complete__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", show], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]
