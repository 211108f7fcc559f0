"""Hub-side metrics and usage events: EC2 calls, the instance gauge, spawn phases,
why a server stopped, and an instance that stopped without the hub asking."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub, Server
from prometheus_client import REGISTRY

from cloudjhub import metrics
from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.fleet import Fleet
from cloudjhub.metrics import stop_reason
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.usage import read_events
from tests.unit.conftest import CLUSTER, REGION


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ec2_calls_are_counted_by_action_and_outcome(ec2: LocalCloudEc2) -> None:
    ok = sample("cloudjhub_ec2_api_calls_total", action="describe_instances", outcome="ok")
    bad_labels = {"action": "stop_instances", "outcome": "InvalidInstanceID.NotFound"}
    bad = sample("cloudjhub_ec2_api_calls_total", **bad_labels)
    ec2.describe_workers()
    with pytest.raises(CloudError):
        ec2._call("stop_instances", InstanceIds=["i-0123456789abcdef0"])
    assert sample("cloudjhub_ec2_api_calls_total", action="describe_instances", outcome="ok") == (
        ok + 1
    )
    assert sample("cloudjhub_ec2_api_calls_total", **bad_labels) == bad + 1


def test_instance_gauge_sets_absent_states_to_zero() -> None:
    metrics.set_instance_counts(["running", "running", "stopped"])
    assert sample("cloudjhub_instances", state="running") == 2
    metrics.set_instance_counts(["stopped"])
    assert sample("cloudjhub_instances", state="running") == 0
    assert sample("cloudjhub_instances", state="stopped") == 1


def test_a_failed_phase_is_not_a_duration() -> None:
    count = sample("cloudjhub_spawn_phase_seconds_count", phase="boot")
    with metrics.spawn_phase("boot"):
        pass
    with pytest.raises(RuntimeError), metrics.spawn_phase("boot"):
        raise RuntimeError("boot timed out")
    assert sample("cloudjhub_spawn_phase_seconds_count", phase="boot") == count + 1


def test_stop_reason_is_idle_only_after_the_idle_timeout() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    naive = (now - timedelta(seconds=600)).replace(tzinfo=None)  # as JupyterHub stores it
    assert stop_reason(naive, 600, now) == "idle"
    assert stop_reason(naive, 601, now) == "request"
    assert stop_reason(now - timedelta(seconds=5), 600, now) == "request"
    assert stop_reason(None, 600, now) == "request"
    assert stop_reason(naive, 0, now) == "request"


# --------------------------------------------------------------------------- the spawner


@pytest.fixture
def spawner_for(
    ec2: LocalCloudEc2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], InstanceSpawner]:
    """A spawner of a running server, no hub; its fleet is the moto-backed one here."""
    monkeypatch.setitem(Fleet._shared, (CLUSTER, REGION, ""), Fleet(ec2, max_age=0))

    def make(user: str) -> InstanceSpawner:
        hub_user = SimpleNamespace(name=user, escaped_name=user, url=f"/user/{user}/")
        spawner = InstanceSpawner(user=hub_user, hub=Hub(), oauth_client_id=f"jupyterhub-{user}")
        spawner.cluster_name, spawner.region, spawner.aws_endpoint_url = CLUSTER, REGION, None
        spawner.worker_instance_type = "t3.medium"
        spawner.hibernate = False
        spawner.idle_timeout = 600
        spawner.usage_log = str(tmp_path / "usage.jsonl")
        spawner.server = Server(base_url=f"/user/{user}/")
        return spawner

    return make


def active(spawner: InstanceSpawner, seconds_ago: float) -> None:
    """Give the spawner a server record whose last activity was that long ago."""
    record = orm.Server(proto="http", ip="10.0.0.1", port=8888, base_url="/", cookie_name="c")
    spawner.orm_spawner = SimpleNamespace(
        name="",  # the default server, as JupyterHub's record says
        last_activity=datetime.now(UTC) - timedelta(seconds=seconds_ago),
        server=record,
    )
    assert spawner.server is not None


def usage(tmp_path: Path) -> list[tuple[str, str, str, str]]:
    events, warnings = read_events(tmp_path / "usage.jsonl")
    assert warnings == []
    return [(e.event, e.user, e.instance_id, e.reason) for e in events]


async def test_poll_counts_a_self_stop_once_and_logs_it(
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
    spawner_for: Callable[[str], InstanceSpawner],
    tmp_path: Path,
) -> None:
    inst = make_worker("dora")
    spawner = spawner_for("dora")
    spawner.instance_id = inst.id
    before = sample("cloudjhub_self_stops_total")
    assert await spawner.poll() is None
    ec2.client.stop_instances(InstanceIds=[inst.id])  # e.g. the worker shut itself down
    assert await spawner.poll() == 0
    assert await spawner.poll() == 0
    assert sample("cloudjhub_self_stops_total") == before + 1
    assert usage(tmp_path) == [("stop", "dora", inst.id, "self")]


async def test_stop_counts_a_reason_and_logs_it(
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
    spawner_for: Callable[[str], InstanceSpawner],
    tmp_path: Path,
) -> None:
    busy, idle = make_worker("erin"), make_worker("fred")
    requested = sample("cloudjhub_server_stops_total", reason="request")
    culled = sample("cloudjhub_server_stops_total", reason="idle")
    self_stops = sample("cloudjhub_self_stops_total")

    first = spawner_for("erin")
    first.instance_id = busy.id
    active(first, seconds_ago=5)
    await first.stop()
    second = spawner_for("fred")
    second.instance_id = idle.id
    active(second, seconds_ago=3600)
    await second.stop()
    assert await second.poll() == 0  # the hub's own stop is not a self-stop

    assert sample("cloudjhub_server_stops_total", reason="request") == requested + 1
    assert sample("cloudjhub_server_stops_total", reason="idle") == culled + 1
    assert sample("cloudjhub_self_stops_total") == self_stops
    assert usage(tmp_path) == [
        ("stop", "erin", busy.id, "request"),
        ("stop", "fred", idle.id, "idle"),
    ]
    states = {i.id: i.state for i in ec2.describe([busy.id, idle.id])}
    assert set(states.values()) <= {"stopping", "stopped"}


async def test_an_unwritable_usage_log_never_fails_a_stop(
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
    spawner_for: Callable[[str], InstanceSpawner],
    tmp_path: Path,
) -> None:
    inst = make_worker("gail")
    spawner = spawner_for("gail")
    (tmp_path / "file").write_text("")
    spawner.usage_log = str(tmp_path / "file" / "usage.jsonl")  # its parent is a file
    spawner.instance_id = inst.id
    await spawner.stop()
    (found,) = ec2.describe([inst.id])
    assert found.state in ("stopping", "stopped")
