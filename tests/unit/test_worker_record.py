"""The server record: typed, replaced whole, and readable in the format agents wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudjhub.worker.paths import Layout
from cloudjhub.worker.record import (
    ServerRecord,
    WatchdogProcess,
    all_records,
    read_record,
    remove_record,
    write_record,
)
from cloudjhub.worker.watchdog import Target


def record(pid: int = 4242) -> ServerRecord:
    return ServerRecord(
        pid=pid, ip="127.0.0.1", port=8888, started=1000, proc_start=77, spec="ab" * 32
    )


def test_written_records_read_back_and_are_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "alice.json"
    watched = record().model_copy(
        update={
            "watch": Target("http://127.0.0.1:8888/api/status", None, 120.0, 6.0),
            "watchdog": WatchdogProcess(pid=4243, proc_start=78),
            "resumed": 2000,
        }
    )
    write_record(path, watched)
    assert read_record(path) == watched
    assert path.stat().st_mode & 0o777 == 0o600
    assert watched.since == 2000 and record().since == 1000


def test_a_record_as_the_untyped_agent_wrote_it_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    old = {
        "pid": 4242,
        "ip": "127.0.0.1",
        "port": 8888,
        "started": 1000,
        "proc_start": 77,
        "spec": "ab" * 32,
        "watch": {
            "status_url": "http://127.0.0.1:8888/user/alice/api/status",
            "hub_url": "http://127.0.0.1:8081/hub/api",
            "limit": 2,
            "interval": 1.0,
        },
        "watchdog": {"pid": 4243, "proc_start": 78},
    }
    path.write_text(json.dumps(old))
    read = read_record(path)
    assert read is not None and read.watch is not None and read.watchdog is not None
    assert (read.watch.limit, read.watchdog.pid, read.resumed) == (2.0, 4243, None)
    # ...and what it writes now is what that agent read: the same keys, and then some.
    write_record(path, read)
    assert json.loads(path.read_text()).items() >= {**old, "watch": old["watch"]}.items()


@pytest.mark.parametrize("text", [None, "", "{", "[1]", '{"pid": "four"}', '{"ip": "x"}'])
def test_missing_or_corrupt_records_mean_nothing_recorded(tmp_path: Path, text: str) -> None:
    path = tmp_path / "alice.json"
    if text is not None:
        path.write_text(text)
    assert read_record(path) is None


def test_remove_only_the_record_of_the_given_pid(tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    write_record(path, record(pid=1))
    remove_record(path, pid=2)  # a newer server's record stays
    assert path.exists()
    remove_record(path, pid=1)
    assert not path.exists()
    remove_record(path)  # nothing there: no error


def test_all_records_skips_what_no_user_could_have_written(tmp_path: Path) -> None:
    layout = Layout.from_env({"CLOUDJHUB_WORKER_ROOT": str(tmp_path / "i-1")})
    assert list(all_records(layout)) == []
    write_record(layout.record_file("alice"), record(pid=1))
    write_record(layout.run_dir / "Not A User.json", record(pid=2))
    (layout.run_dir / "bob.json").write_text("corrupt")
    assert [r.pid for r in all_records(layout)] == [1]
