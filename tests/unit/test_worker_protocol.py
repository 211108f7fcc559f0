"""The hub-to-worker contract, as the agent enforces it.

What breaks the contract is refused in one line that names the field and never
shows an env value (env carries the API token).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudjhub.worker.protocol import (
    EXIT_BAD_REQUEST,
    ProtocolError,
    StartReply,
    StartRequest,
)
from tests.unit.worker_harness import (
    AGENT,
    SECRET,
    Worker,
    process_running,
)

INVALID = [
    ({"user": "Alice!"}, "user"),
    ({"user": None}, "user"),
    ({"ip": "not-an-ip"}, "ip"),
    ({"port": 0}, "port"),
    ({"port": "8888"}, "port"),
    ({"port": True}, "port"),
    ({"env": {"A": 1}}, "env"),
    ({"env": ["A"]}, "env"),
    ({"cmd": []}, "cmd"),
    ({"cmd": "jupyterhub-singleuser"}, "cmd"),
    ({"cmd": ["x", 3]}, "cmd"),
    ({"home_volume": {"volume_id": "../../etc"}}, "home_volume"),
    ({"timeout": -1}, "timeout"),
]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


# --------------------------------------------------------------------------- refusals


def valid_request() -> dict[str, Any]:
    return {
        "user": "alice",
        "ip": "127.0.0.1",
        "port": 8888,
        "env": {"JUPYTERHUB_API_TOKEN": SECRET},
        "cmd": ["jupyterhub-singleuser"],
        "home_volume": None,
        "timeout": 10,
    }


@pytest.mark.parametrize(("change", "field_name"), INVALID)
def test_a_bad_field_is_one_line_naming_it(change: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        StartRequest.model_validate({**valid_request(), **change})
    assert caught.value.exit_code == EXIT_BAD_REQUEST
    assert field_name in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"A=B": SECRET}, "invalid env: bad variable name 'A=B'"),
        ({"": SECRET}, "invalid env: bad variable name ''"),
        ({"TOKEN": SECRET + "\0"}, "invalid env: value of TOKEN must be a string"),
        ({"TOKEN": [SECRET]}, "invalid env: value of TOKEN must be a string"),
    ],
)
def test_env_errors_never_show_a_value(env: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        StartRequest.model_validate({**valid_request(), "env": env})
    assert caught.value.message == message
    assert SECRET not in str(caught.value)
    # Nor anywhere a traceback would show it.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_null_fields_take_their_defaults_and_secrets_stay_out_of_repr() -> None:
    request = StartRequest.model_validate(
        {**valid_request(), "timeout": None, "idle_timeout": None, "resume": None}
    )
    assert (request.timeout, request.idle_timeout, request.resume) == (60.0, 0, False)
    reply = StartReply(pid=1, ip="127.0.0.1", port=8888, resumed=True, api_token=SECRET)
    assert SECRET not in repr(request) and SECRET not in repr(reply)


@pytest.mark.parametrize(("change", "field_name"), INVALID)
def test_invalid_requests_exit_2_naming_the_field(
    worker: Worker, change: dict[str, Any], field_name: str
) -> None:
    req = worker.request()
    req.update(change)
    result = worker.run("start", request=req)
    assert result.returncode == 2
    assert field_name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert SECRET not in result.stderr
    assert not (worker.tmp / "alice.info").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("idle_timeout", -1), ("idle_timeout", "60"), ("self_stop_grace", 1.5), ("resume", "yes")],
)
def test_bad_self_stop_fields_are_rejected(worker: Worker, field: str, value: object) -> None:
    done = worker.run("start", request=worker.request(**{field: value}))
    assert done.returncode == 2
    assert f"invalid {field}" in done.stderr


# --------------------------------------------------------------------------- framing


def test_request_is_read_without_waiting_for_eof(worker: Worker) -> None:
    """The hub may keep the SSH channel's stdin open after sending the request."""
    req = worker.request()
    worker.users.add("alice")
    env = {
        **os.environ,
        "CLOUDJHUB_WORKER_ROOT": str(worker.root),
        "CLOUDJHUB_VOLUMES_DIR": str(worker.volumes),
    }
    proc = subprocess.Popen(
        [*AGENT, "start"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(req).encode() + b"\n")
        proc.stdin.flush()
        assert proc.wait(timeout=20) == 0
        out = json.loads(proc.stdout.read())
        worker.pids.add(out["pid"])
        assert process_running(out["pid"])
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_reply_reads_back_with_only_the_keys_it_needs() -> None:
    fresh = StartReply(pid=41, ip="10.0.3.7", port=8888)
    assert json.loads(fresh.to_json()) == {"pid": 41, "ip": "10.0.3.7", "port": 8888}
    kept = StartReply(pid=41, ip="10.0.3.7", port=8888, resumed=True, api_token="old-token")
    assert StartReply.parse(kept.to_json() + "\n") == kept


@pytest.mark.parametrize("text", ["", "[1]", '{"pid": "41"}', '{"ip": "x", "port": 1}'])
def test_a_reply_that_breaks_the_contract_is_refused(text: str) -> None:
    with pytest.raises(ProtocolError):
        StartReply.parse(text)
