"""``cloudjhub-worker``'s command line: its commands, usage errors and the log command.

Runs the agent as a real subprocess in emulated mode (see worker_harness).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudjhub.worker.logs import ROTATE_BYTES
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


def test_log_agent_reads_the_watchdog_log_and_lines_are_bounded(worker: Worker) -> None:
    watch_log = worker.log_file("alice").with_name("alice.watch.log")
    watch_log.parent.mkdir(parents=True)
    watch_log.write_text("watch started\nwatch ended: hub gone\n")
    result = worker.run("log", "--user", "alice", "--agent", "--lines", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "watch ended: hub gone\n"
    refused = worker.run("log", "--user", "alice", "--lines", "10001")
    assert refused.returncode == 2 and "--lines" in refused.stderr


def test_log_follow_streams_appended_lines_until_stdin_ends(worker: Worker) -> None:
    result = worker.start(worker.request())
    assert result.returncode == 0, result.stderr
    env = {
        **os.environ,
        "CLOUDJHUB_WORKER_ROOT": str(worker.root),
        "CLOUDJHUB_VOLUMES_DIR": str(worker.volumes),
    }
    follower = subprocess.Popen(
        [*AGENT, "log", "--user", "alice", "--lines", "1", "--follow"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    worker.pids.add(follower.pid)
    assert follower.stdout is not None and follower.stdin is not None
    try:
        assert b"fake server starting" in follower.stdout.readline()
        with worker.log_file("alice").open("ab") as log:
            log.write(b"appended while following\n")
        assert follower.stdout.readline() == b"appended while following\n"
        # A rotated log (the next start moves a big one aside) is followed afresh.
        worker.log_file("alice").rename(worker.log_file("alice").with_name("alice.log.1"))
        worker.log_file("alice").write_bytes(b"first line of a new log\n")
        assert follower.stdout.readline() == b"first line of a new log\n"
        follower.stdin.close()  # what the SSH client's going away looks like
        assert follower.wait(timeout=10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_a_big_log_is_rotated_at_the_next_start(worker: Worker) -> None:
    log = worker.log_file("alice")
    log.parent.mkdir(parents=True)
    log.write_bytes(b"old run\n" + b"x" * ROTATE_BYTES)
    result = worker.start(worker.request())
    assert result.returncode == 0, result.stderr
    assert log.with_name("alice.log.1").read_bytes().startswith(b"old run\n")
    assert log.read_bytes().startswith(b"=== ")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
