"""``cloudjhub-worker``'s command line: its commands, usage errors and the log command.

Runs the agent as a real subprocess in emulated mode (see worker_harness).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.worker_harness import AGENT, Worker


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


def test_help_for_group_and_every_command(worker: Worker) -> None:
    result = worker.run("--help")
    assert result.returncode == 0
    for command in ("start", "stop", "status", "log", "pids"):
        assert command in result.stdout
        sub = worker.run(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert f"cloudjhub-worker {command}" in sub.stdout


def test_malformed_stdin_and_bad_user_option(worker: Worker) -> None:
    assert worker.run("start").returncode == 2
    proc = subprocess.run(
        [*AGENT, "start"],
        input="[1, 2]",
        capture_output=True,
        text=True,
        env={**os.environ, "CLOUDJHUB_WORKER_ROOT": str(worker.root)},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "object" in proc.stderr
    for command in ("stop", "status", "log"):
        result = worker.run(command, "--user", "../etc")
        assert result.returncode == 2
        assert "--user" in result.stderr


def test_log_command_prints_last_lines(worker: Worker) -> None:
    assert worker.run("log", "--user", "alice").stdout == ""
    result = worker.start(worker.request())
    assert result.returncode == 0, result.stderr
    full = worker.run("log", "--user", "alice")
    assert full.returncode == 0
    assert full.stdout.splitlines()[0].startswith("=== ")
    last = worker.run("log", "--user", "alice", "--lines", "1").stdout.splitlines()
    assert len(last) == 1 and "fake server starting" in last[0]
