"""`cloudjhub release`: the command (CliRunner), and the real agent delivering a release.

The agent runs as a subprocess in emulated mode (worker_harness); the spawner's staging
talks to it through a stand-in for remote.run_on that runs the same agent locally.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudjhub import remote
from cloudjhub.cli import main
from cloudjhub.release_spawner import ReleaseSpawnerMixin
from cloudjhub.releases import published
from tests.unit.worker_harness import AGENT, Worker


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


@pytest.fixture
def course(tmp_path: Path) -> Path:
    folder = tmp_path / "week1"
    (folder / "data").mkdir(parents=True)
    (folder / "intro.ipynb").write_text('{"cells": []}')
    (folder / "data" / "table.csv").write_text("a,b\n1,2\n")
    (folder / "latest").symlink_to("data/table.csv")
    return folder


def release(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["release", *args])
    return result.exit_code, result.output


def test_release_writes_a_tarball_the_hub_reads(course: Path, tmp_path: Path) -> None:
    out = tmp_path / "releases"
    dry_status, dry = release(
        "demo", str(course), "--to", "lab-1", "--releases-dir", str(out), "--dry-run"
    )
    assert dry_status == 0 and "intro.ipynb" in dry and not out.exists()
    status, text = release("demo", str(course), "--to", "lab-1", "--releases-dir", str(out))
    assert status == 0, text
    [made] = published(out)
    assert made.name == "lab-1" and "~/lab-1" in text
    with tarfile.open(made.tarball) as tar:
        assert sorted(tar.getnames()) == ["data", "data/table.csv", "intro.ipynb", "latest"]
    # Without --to the folder's own name is used.
    assert release("demo", str(course), "--releases-dir", str(out))[0] == 0
    assert [r.name for r in published(out)] == ["lab-1", "week1"]


def _escape_absolute(folder: Path) -> None:
    (folder / "passwd").symlink_to("/etc/passwd")


def _escape_dotdot(folder: Path) -> None:
    (folder / "data" / "up").symlink_to("../../secret")


def _fifo(folder: Path) -> None:
    os.mkfifo(folder / "pipe")


@pytest.mark.parametrize(
    ("spoil", "args", "named"),
    [
        (None, ["--to", "../x"], "--to"),
        (None, ["--to", ".hidden"], "--to"),
        (None, ["--to", "a/b"], "--to"),
        (_escape_absolute, [], "passwd: a symlink leading out of the folder"),
        (_escape_dotdot, [], "up: a symlink leading out of the folder"),
        (_fifo, [], "pipe: not a regular file"),
    ],
)
def test_bad_release_is_refused_and_creates_nothing(
    course: Path, tmp_path: Path, spoil: object, args: list[str], named: str
) -> None:
    if callable(spoil):
        spoil(course)
    out = tmp_path / "releases"
    status, text = release("demo", str(course), *args, "--releases-dir", str(out))
    assert status == 2, text
    assert named in text and len(text.strip().splitlines()) == 1
    assert "Traceback" not in text and not out.exists()


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    status, text = release("demo", str(tmp_path / "nope"), "--releases-dir", str(tmp_path / "r"))
    assert status == 2 and "no such folder" in text and len(text.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the agent


def agent_run_on(worker: Worker, sent: list[list[str]]) -> object:
    """remote.run_on, answered by the real agent on the worker's emulated root."""

    def run_on(
        _target: remote.Target, argv: list[str], stdin: bytes = b"", timeout: float = 120.0
    ) -> remote.CommandResult:
        sent.append(argv)
        env = {**os.environ, "CLOUDJHUB_WORKER_ROOT": str(worker.root)}
        env["CLOUDJHUB_VOLUMES_DIR"] = str(worker.volumes)
        proc = subprocess.run(
            [*AGENT, *argv[1:]], input=stdin, capture_output=True, env=env, timeout=timeout
        )
        return remote.CommandResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    return run_on


def test_release_reaches_the_home_at_next_start_without_overwriting(
    worker: Worker, course: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "releases"
    assert release("demo", str(course), "--releases-dir", str(out))[0] == 0
    sent: list[list[str]] = []
    monkeypatch.setattr(remote, "run_on", agent_run_on(worker, sent))
    spawner = ReleaseSpawnerMixin(releases_dir=str(out))
    target = remote.Target("127.0.0.1", 22, "ubuntu", "key", ())
    home = worker.root / "home" / "alice"
    (home / "week1").mkdir(parents=True)
    (home / "week1" / "intro.ipynb").write_text("my answers")

    staged = spawner.stage_releases(target, ["cloudjhub-worker"])
    assert [r.name for r in staged] == ["week1"]
    assert worker.start(worker.request(releases=[r.model_dump() for r in staged])).returncode == 0
    assert (home / "week1" / "intro.ipynb").read_text() == "my answers"
    assert (home / "week1" / "data" / "table.csv").read_text() == "a,b\n1,2\n"
    assert os.readlink(home / "week1" / "latest") == "data/table.csv"

    # Staged once per instance; delivered once per digest: a deleted file stays deleted.
    (home / "week1" / "data" / "table.csv").unlink()
    assert spawner.stage_releases(target, ["cloudjhub-worker"]) == staged
    assert [argv[1] for argv in sent] == ["releases", "stage-release", "releases"]
    assert worker.start(worker.request(releases=[r.model_dump() for r in staged])).returncode == 0
    assert not (home / "week1" / "data" / "table.csv").exists()

    # A new release of the same name brings what is new, still overwriting nothing.
    (course / "week2.ipynb").write_text("{}")
    assert release("demo", str(course), "--releases-dir", str(out))[0] == 0
    staged = spawner.stage_releases(target, ["cloudjhub-worker"])
    assert worker.start(worker.request(releases=[r.model_dump() for r in staged])).returncode == 0
    assert (home / "week1" / "week2.ipynb").exists()
    assert (home / "week1" / "intro.ipynb").read_text() == "my answers"


def _tarball(name: str, linkname: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        if linkname:
            info.type, info.linkname = tarfile.SYMTYPE, linkname
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [_tarball("../evil"), _tarball("/etc/evil"), _tarball("link", "/etc/shadow"), b"not gzip"],
)
def test_agent_refuses_a_tarball_escaping_its_folder(worker: Worker, data: bytes) -> None:
    env = {**os.environ, "CLOUDJHUB_WORKER_ROOT": str(worker.root)}
    proc = subprocess.run(
        [*AGENT, "stage-release", "--name", "bad"], input=data, capture_output=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.decode().startswith("cloudjhub-worker: release bad:")
    assert json.loads(worker.run("releases").stdout) == {}


def test_agent_refuses_a_bad_release_in_the_request(worker: Worker) -> None:
    bad = worker.request(releases=[{"name": "../x", "sha256": "0" * 64}])
    result = worker.start(bad)
    assert result.returncode == 2 and "invalid releases" in result.stderr
