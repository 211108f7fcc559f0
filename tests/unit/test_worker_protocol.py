"""The hub-to-worker contract, from both ends.

What the spawner builds, the agent accepts; what the agent prints, the spawner reads;
what breaks the contract is refused in one line that names the field and never
shows an env value (env carries the API token).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub

from cloudjhub.spawner import InstanceSpawner, SpawnError
from cloudjhub.worker.protocol import (
    EXIT_BAD_REQUEST,
    HomeVolume,
    ProtocolError,
    StartReply,
    StartRequest,
    read_request,
)
from tests.helpers import alive
from tests.unit.worker_harness import (
    AGENT,
    FAKE_SERVER,
    SECRET,
    Worker,
    free_port,
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

SERVER_CONFIG = {
    "CLUSTER_NAME": "alpha",
    "REGION": "us-east-1",
    "WORKER_AMI": "ami-0abc",
    "SUBNET_ID": "subnet-0abc",
    "WORKER_SECURITY_GROUPS": ["sg-1"],
    "KEY_NAME": "key",
    "JUPYTER_NOTEBOOK_TIMEOUT": 3600,
}


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


def spawner(tmp_path: Path, **traits: Any) -> InstanceSpawner:
    config = tmp_path / "server_config.json"
    config.write_text(json.dumps(SERVER_CONFIG))
    user = SimpleNamespace(name="ann", escaped_name="ann", url="/user/ann/")
    made = InstanceSpawner(
        server_config_file=str(config), user=user, hub=Hub(), oauth_client_id="c", **traits
    )
    made.api_token = SECRET
    return made


# --------------------------------------------------------------------------- round trip


def test_the_request_the_spawner_builds_is_the_one_the_agent_reads(tmp_path: Path) -> None:
    hub_side = spawner(tmp_path, hibernate=True, worker_instance_type="t3.medium")
    home = HomeVolume(volume_id="vol-0abc123", device="/dev/sdf")
    request = hub_side._start_request("10.0.3.7", home)

    agent_side = read_request(io.BytesIO(request.to_json()))
    assert agent_side == request
    assert (agent_side.user, agent_side.ip, agent_side.port) == ("ann", "10.0.3.7", 8888)
    assert agent_side.env["JUPYTERHUB_API_TOKEN"] == SECRET
    assert agent_side.home_volume == home
    assert agent_side.timeout == hub_side.jupyter_start_timeout
    assert (agent_side.idle_timeout, agent_side.self_stop_grace) == (3600, 1800)
    assert agent_side.resume is True


def test_a_spawner_built_request_runs_and_its_reply_is_adopted(
    tmp_path: Path, worker: Worker
) -> None:
    """End to end through the real agent: a fresh start, then a resume with a new token."""
    server = worker.script("fake_server.py", FAKE_SERVER)
    port = free_port()
    info = tmp_path / "ann.info"
    hub_side = spawner(
        tmp_path,
        hibernate=True,
        worker_instance_type="t3.medium",
        notebook_port=port,
        cmd=[sys.executable, str(server), "127.0.0.1", str(port), str(info)],
    )
    request = json.loads(hub_side._start_request("127.0.0.1", None).to_json())
    first = worker.start(request)
    assert first.returncode == 0, first.stderr
    hub_side._adopt_resumed_server(first.stdout)
    assert hub_side.api_token == SECRET  # a fresh server runs with the new token

    hub_side.api_token = "a-new-token-for-this-spawn"
    again = json.loads(hub_side._start_request("127.0.0.1", None).to_json())
    resumed = worker.start(again)
    assert resumed.returncode == 0, resumed.stderr
    assert StartReply.parse(resumed.stdout).pid == StartReply.parse(first.stdout).pid
    hub_side._adopt_resumed_server(resumed.stdout)
    assert hub_side.api_token == SECRET  # the token the kept server runs with


def test_the_reply_the_agent_writes_is_the_one_the_spawner_reads(tmp_path: Path) -> None:
    fresh = StartReply(pid=41, ip="10.0.3.7", port=8888)
    assert json.loads(fresh.to_json()) == {"pid": 41, "ip": "10.0.3.7", "port": 8888}
    kept = StartReply(pid=41, ip="10.0.3.7", port=8888, resumed=True, api_token="old-token")
    assert StartReply.parse(kept.to_json() + "\n") == kept

    hub_side = spawner(tmp_path)
    hub_side._adopt_resumed_server(fresh.to_json())
    assert hub_side.api_token == SECRET
    hub_side._adopt_resumed_server("not json at all")
    assert hub_side.api_token == SECRET
    hub_side._adopt_resumed_server(kept.to_json())
    assert hub_side.api_token == "old-token"


@pytest.mark.parametrize("text", ["", "[1]", '{"pid": "41"}', '{"ip": "x", "port": 1}'])
def test_a_reply_that_breaks_the_contract_is_refused(text: str) -> None:
    with pytest.raises(ProtocolError):
        StartReply.parse(text)


def test_a_misconfigured_hub_fails_before_it_reaches_the_worker(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match=r"misconfigured: invalid port 0: must be an integer"):
        spawner(tmp_path, notebook_port=0)._start_request("10.0.3.7", None)


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
        assert alive(out["pid"])
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
