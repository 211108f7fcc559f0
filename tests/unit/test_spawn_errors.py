"""No exception from start() reaches JupyterHub as a bare 500: whatever fails, the
user reads a sentence (JupyterHub renders `jupyterhub_message` on the spawn page and
in the REST API's error) and the admin finds the traceback in the hub's log."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from jupyterhub.utils import format_exception

from cloudjhub import remote
from cloudjhub.aws.client import CloudError
from cloudjhub.kept_logs import KEPT_LINES, KeptLogs
from cloudjhub.spawner import InstanceSpawner, SpawnError
from tests.unit.test_spawner_traits import spawner as make_spawner


def failing_start(monkeypatch: pytest.MonkeyPatch, exc: BaseException, at: str = "") -> None:
    async def _start(self: InstanceSpawner) -> str:
        self.instance_id = "i-0123456789abcdef0"
        if at:
            self._emit(40, at)
        raise exc

    monkeypatch.setattr(InstanceSpawner, "_start", _start)


def start(spawner: InstanceSpawner) -> SpawnError:
    with pytest.raises(SpawnError) as failure:
        asyncio.run(spawner.start())
    return failure.value


def shown(exc: Exception) -> Any:
    """What JupyterHub shows: the spawn page's message (only an exception's
    jupyterhub_message; the REST API's 500 says the same, else 'Internal Server Error')."""
    message, _html = format_exception(exc, only_jupyterhub=True)
    return message


@pytest.mark.parametrize(
    ("exc", "names"),
    [
        (FileNotFoundError(2, "No such file or directory"), "FileNotFoundError: [Errno 2]"),
        (ValueError("bad\nvalue"), "ValueError: bad value"),
        (KeyError(), "unexpected KeyError."),
        (AssertionError(), "unexpected AssertionError."),
    ],
    ids=["oserror", "valueerror", "empty-keyerror", "bug"],
)
def test_an_unexpected_error_becomes_one_sentence_for_the_user(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    exc: Exception,
    names: str,
) -> None:
    failing_start(monkeypatch, exc, at="Connecting")
    spawner = make_spawner(tmp_path)
    spawner.log = logging.getLogger("hub-under-test")

    with caplog.at_level(logging.ERROR, logger="hub-under-test"):
        failure = start(spawner)

    message = shown(failure)
    assert message == str(failure)
    assert "\n" not in message and names in message, message
    assert message.startswith("Your server failed to start at 'Connecting'")
    assert "instance i-0123456789abcdef0" in message
    assert message.endswith("Tell your admin; the hub's log has the details.")
    assert failure.__cause__ is exc
    # The traceback goes to the hub's log, not to the user.
    (record,) = [r for r in caplog.records if r.name == "hub-under-test"]
    assert record.exc_info is not None and record.exc_info[1] is exc


@pytest.mark.parametrize(
    "exc",
    [
        CloudError("There is no spare t3.medium capacity; try again in a few minutes."),
        remote.HostKeyError("SSH host key of 10.0.0.5 does not match the pinned key"),
        SpawnError("Your instance i-1 is still 'pending' after 600s. Tell your admin."),
    ],
    ids=["cloud", "remote", "spawn"],
)
def test_known_failures_keep_their_own_words_and_jupyterhub_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    failing_start(monkeypatch, exc)
    failure = start(make_spawner(tmp_path))
    assert shown(failure) == str(exc)


def test_cancellation_is_not_a_spawn_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JupyterHub cancels a start that overran start_timeout; that must stay a cancel."""
    failing_start(monkeypatch, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(make_spawner(tmp_path).start())


def test_a_failed_spawns_message_is_kept_for_the_logs_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What JupyterHub shows (Jupyter's last lines, from the agent) is also kept in the
    hub's directory, for `cloudjhub logs` and `status USER` once the page is gone."""
    lines = [f"jupyter line {n}" for n in range(80)]
    message = "Jupyter failed to start on your instance i-1:\n" + "\n".join(lines)
    failing_start(monkeypatch, SpawnError(message))
    spawner = make_spawner(tmp_path)
    assert shown(start(spawner)) == message
    kept = KeptLogs(tmp_path / "kept-logs").read("ann")
    assert kept is not None
    assert (kept.event, kept.instance_id, kept.user, kept.server) == (
        "failed-spawn",
        "i-0123456789abcdef0",
        "ann",
        "",
    )
    assert kept.lines == [*lines[-KEPT_LINES:]]
    assert stat.S_IMODE((tmp_path / "kept-logs" / "ann.json").stat().st_mode) == 0o600
    # A line too long for a message is cut, and a cut is marked.
    failing_start(monkeypatch, SpawnError("x" * 2000))
    start(spawner)
    again = KeptLogs(tmp_path / "kept-logs").read("ann")
    assert again is not None and again.lines == ["x" * 500 + " [cut]"]


def test_a_failed_spawns_message_rides_in_the_state_admins_see_until_a_spawn_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JupyterHub puts get_state() in a server's model for `admin:server_state` (the
    admin page's server row): the last failure is there, tokens redacted, and it
    survives a hub restart (load_state) but not the next successful spawn."""
    message = (
        "Jupyter failed to start on your instance i-1:\n"
        "http://127.0.0.1:8888/lab?token=s3cr3tvalue&x=1\n"
        "OSError: no space left"
    )
    failing_start(monkeypatch, SpawnError(message))
    spawner = make_spawner(tmp_path)
    start(spawner)
    failure = spawner.get_state()["last_spawn_failure"]
    assert "OSError: no space left" in failure["message"]
    assert "s3cr3tvalue" not in failure["message"] and "token=[redacted]&x=1" in failure["message"]
    kept = KeptLogs(tmp_path / "kept-logs").read("ann")
    assert kept is not None and not any("s3cr3tvalue" in line for line in kept.lines)
    spawner.clear_state()  # what JupyterHub does after a failed spawn: it stays
    restarted = make_spawner(tmp_path)
    restarted.load_state(spawner.get_state())
    assert restarted.get_state()["last_spawn_failure"] == failure

    async def _start(self: InstanceSpawner) -> str:
        return "http://10.0.0.5:8888"

    monkeypatch.setattr(InstanceSpawner, "_start", _start)
    asyncio.run(restarted.start())
    assert "last_spawn_failure" not in restarted.get_state()


@pytest.mark.parametrize(
    "line",
    [
        '{"token": "s3cr3tvalue"}',
        "api_token: s3cr3tvalue",
        "GET /hub/login?next=%2Fuser%2Fann%2Flab%3Ftoken%3Ds3cr3tvalue%26x%3D1",
        "password=s3cr3tvalue",
        "GET /hub/oauth_callback?code=s3cr3tvalue&state=s3cr3tvalue",
        "Authorization: Basic s3cr3tvalue",
        "client_secret='s3cr3tvalue'",
    ],
)
def test_secrets_in_the_shapes_logs_print_them_never_reach_the_state_or_a_kept_tail(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Admins and TAs (admin:servers includes admin:server_state) read the state."""
    failing_start(monkeypatch, SpawnError(f"Jupyter failed to start on your instance:\n{line}"))
    spawner = make_spawner(tmp_path)
    start(spawner)
    failure = spawner.get_state()["last_spawn_failure"]
    assert "s3cr3tvalue" not in failure["message"] and "[redacted]" in failure["message"]
    kept = KeptLogs(tmp_path / "kept-logs").read("ann")
    assert kept is not None and not any("s3cr3tvalue" in kept_line for kept_line in kept.lines)
