"""Bad requests to ``cloudjhub-worker start``: one line naming the input, exit 2, nothing run.

Every case goes through the real agent (a subprocess in emulated mode) as raw bytes on
stdin, because several of them (NaN, 1e400, deep nesting) are not what json.dumps writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.worker import selfstop, server
from cloudjhub.worker.paths import Layout
from cloudjhub.worker.protocol import AgentError, StartRequest
from tests.helpers import alive
from tests.unit.worker_harness import AGENT, SECRET, Worker, wait_gone

MAX_REQUEST_BYTES = 1024 * 1024  # the 1 MB


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


def with_field(req: dict[str, Any], name: str, raw: str) -> bytes:
    """The request with one field's JSON text replaced verbatim."""
    text = json.dumps({**req, name: "@@RAW@@"})
    return text.replace('"@@RAW@@"', raw).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (name, how to build the request bytes from a valid request, what stderr must name)
CASES: list[tuple[str, Any, str]] = [
    ("integer ip", lambda r: with_field(r, "ip", "2130706433"), "invalid ip"),
    ("nested ip", lambda r: with_field(r, "ip", nested(100_000)), "nested too deeply"),
    ("nested env", lambda r: with_field(r, "env", '{"A":' * 50_000 + "1" + "}" * 50_000), "nested"),
    ("nested unknown field", lambda r: with_field(r, "extra", nested(100_000)), "nested"),
    ("timeout NaN", lambda r: with_field(r, "timeout", "NaN"), "invalid timeout"),
    ("timeout Infinity", lambda r: with_field(r, "timeout", "Infinity"), "invalid timeout"),
    ("timeout 1e300", lambda r: with_field(r, "timeout", "1e300"), "invalid timeout"),
    ("timeout negative", lambda r: with_field(r, "timeout", "-5"), "invalid timeout"),
    (
        "idle_timeout 1e400",
        lambda r: with_field(r, "idle_timeout", "1e400"),
        "invalid idle_timeout",
    ),
    ("idle_timeout NaN", lambda r: with_field(r, "idle_timeout", "NaN"), "invalid idle_timeout"),
    (
        "idle_timeout 10**30",
        lambda r: with_field(r, "idle_timeout", "1" + "0" * 30),
        "idle_timeout",
    ),
    ("idle_timeout -1", lambda r: with_field(r, "idle_timeout", "-1"), "invalid idle_timeout"),
    ("grace 10**20", lambda r: with_field(r, "self_stop_grace", "1" + "0" * 20), "self_stop_grace"),
    ("grace Infinity", lambda r: with_field(r, "self_stop_grace", "Infinity"), "self_stop_grace"),
    ("port 10**5000", lambda r: with_field(r, "port", "1" + "0" * 5000), "number too large"),
    ("port NaN", lambda r: with_field(r, "port", "NaN"), "invalid port"),
    (
        "device with ..",
        lambda r: with_field(
            r, "home_volume", '{"volume_id":"vol-1","device":"/dev/../etc/shadow"}'
        ),
        "invalid home_volume.device",
    ),
    (
        "device ending in a newline",
        lambda r: with_field(r, "home_volume", '{"volume_id":"vol-1","device":"/dev/sdf\\n"}'),
        "invalid home_volume.device",
    ),
    (
        "user ending in a newline",
        lambda r: with_field(r, "user", '"alice\\n"'),
        "invalid user",
    ),
    (
        "16 MB request",
        lambda r: json.dumps({**r, "env": {"X": "a" * (16 * 1024 * 1024)}}).encode(),
        "too large",
    ),
    (
        "just over 1 MB",
        lambda r: json.dumps({**r, "env": {"X": "a" * MAX_REQUEST_BYTES}}).encode(),
        "too large",
    ),
]


@pytest.mark.parametrize(("build", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_requests_are_one_line_exit_2_and_start_nothing(
    worker: Worker, build: Any, named: str
) -> None:
    req = worker.request(idle_timeout=60, self_stop_grace=60)
    env = {
        **os.environ,
        "CLOUDJHUB_WORKER_ROOT": str(worker.root),
        "CLOUDJHUB_VOLUMES_DIR": str(worker.volumes),
    }
    started = time.monotonic()
    done = subprocess.run(
        [*AGENT, "start"], input=build(req), capture_output=True, env=env, timeout=60, check=False
    )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert named in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert len(stderr) < 300 and "Traceback" not in stderr
    assert SECRET not in stderr
    assert time.monotonic() - started < 10
    # Nothing started, nothing created.
    assert not (worker.tmp / "alice.info").exists()
    assert not worker.root.exists() and not worker.volumes.exists()


def test_a_request_of_exactly_the_limit_is_read(worker: Worker) -> None:
    req = worker.request()
    text = json.dumps({**req, "env": {**req["env"], "PAD": ""}})
    pad = MAX_REQUEST_BYTES - len(text.encode())
    text = json.dumps({**req, "env": {**req["env"], "PAD": "a" * pad}})
    assert len(text.encode()) == MAX_REQUEST_BYTES
    worker.users.add("alice")
    done = subprocess.run(
        [*AGENT, "start"],
        input=text.encode(),
        capture_output=True,
        env={
            **os.environ,
            "CLOUDJHUB_WORKER_ROOT": str(worker.root),
            "CLOUDJHUB_VOLUMES_DIR": str(worker.volumes),
        },
        timeout=60,
        check=False,
    )
    worker.track_info("alice")
    # Read whole and accepted; the server then fails on its 1 MB variable, not the agent.
    assert "too large" not in done.stderr.decode()


LOUD_SERVER = """
import sys
for i in range(45):
    print(str(i) + ":" + "x" * 200_000, flush=True)
sys.exit(7)
"""


def test_a_failed_start_sends_back_short_log_lines(worker: Worker) -> None:
    """A user's server controls its log; the failure reply stays small whatever it writes."""
    script = worker.script("loud.py", LOUD_SERVER)
    done = worker.start(worker.request(cmd=[sys.executable, str(script)]))
    assert done.returncode == 3
    assert "Jupyter exited with status 7" in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) > 5  # the tail is still there, only cut
    assert lines[-1].startswith("44:xxx")
    assert all(len(line) <= 520 for line in lines), max(len(line) for line in lines)
    assert len(done.stderr) < 32 * 1024


def test_a_server_whose_watchdog_cannot_start_is_stopped(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never a server nobody watches: if the watchdog fails, the server goes too."""
    req = worker.request(idle_timeout=60, self_stop_grace=60)

    def no_watchdog(*_args: object, **_kwargs: object) -> None:
        raise OSError("no watchdog for you")

    monkeypatch.setattr(selfstop, "spawn_detached", no_watchdog)
    layout = Layout(root=worker.root, volumes_dir=worker.volumes)
    with pytest.raises(AgentError, match="watchdog"):
        server.start_server(layout, StartRequest.model_validate(req))
    info = worker.track_info("alice")
    assert info is not None  # it did start
    assert wait_gone(info["pid"]), "the unwatched server is still running"
    assert not worker.record_file("alice").exists()
    if alive(info["pid"]):  # pragma: no cover - only if the assertion above failed
        os.kill(info["pid"], signal.SIGKILL)
