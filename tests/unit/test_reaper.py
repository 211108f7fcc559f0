"""The orphan reaper: what it stops, when, and what it never touches."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY

from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.reaper import HubApi, HubUnavailable, Reaper, default_timing
from cloudjhub.tags import CLUSTER_TAG, ROLE_TAG, USER_TAG
from cloudjhub.usage import read_events
from tests.helpers import ApiCalls

GRACE = 10.0


def worker(iid: str, user: str, state: str = "running") -> Instance:
    tags = {CLUSTER_TAG: "alpha", ROLE_TAG: "worker", USER_TAG: user}
    return Instance(iid, state, "t3.medium", "10.0.0.1", None, "us-east-1a", tags)


@dataclass
class FakeEc2:
    """The two calls the reaper makes, scripted."""

    workers: list[Instance]
    cluster: str = "alpha"
    stopped: list[str] = field(default_factory=list)
    fail: bool = False

    def describe_workers(self) -> list[Instance]:
        if self.fail:
            raise CloudError("EC2 describe_instances failed: RequestLimitExceeded")
        return self.workers

    def stop(self, instance_id: str) -> None:
        self.stopped.append(instance_id)
        self.workers = [
            replace(w, state="stopped") if w.id == instance_id else w for w in self.workers
        ]


@dataclass
class FakeHub:
    wanted: set[str] = field(default_factory=set)
    down: bool = False
    wants_on_recheck: set[str] = field(default_factory=set)

    def servers_in_use(self) -> set[tuple[str, str]]:
        if self.down:
            raise HubUnavailable("cannot list the hub's users: connection refused")
        return {(u, "") for u in self.wanted}

    def has_server(self, user: str, server: str = "") -> bool:
        return not server and (user in self.wanted or user in self.wants_on_recheck)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(workers: list[Instance], hub: FakeHub, tmp_path: Path) -> tuple[Reaper, FakeEc2, Clock]:
    ec2, clock = FakeEc2(workers), Clock()
    reaper = Reaper(ec2, hub, GRACE, str(tmp_path / "usage.jsonl"), clock)  # type: ignore[arg-type]
    return reaper, ec2, clock


def reaper_stops() -> float:
    return REGISTRY.get_sample_value("cloudjhub_reaper_stops_total") or 0.0


def test_timing_follows_the_idle_timeout() -> None:
    assert default_timing(30) == (7.5, 15.0)
    assert default_timing(8) == (5.0, 10.0)
    assert default_timing(3600) == (300.0, 600.0)
    interval, grace = default_timing(30)
    assert interval + grace < 120  # the demo with --idle-timeout 30: within two minutes


def test_orphan_is_stopped_only_after_the_grace_period(tmp_path: Path) -> None:
    hub = FakeHub(wanted={"alice"})
    reaper, ec2, clock = make([worker("i-a", "alice"), worker("i-g", "ghost")], hub, tmp_path)
    before = reaper_stops()
    assert reaper.round() == []  # first seen now
    clock.now += GRACE - 1
    assert reaper.round() == []
    clock.now += 1
    assert reaper.round() == ["i-g"]
    assert ec2.stopped == ["i-g"]  # never alice's: she has a server
    assert reaper_stops() == before + 1
    events, _ = read_events(tmp_path / "usage.jsonl")
    assert [(e.event, e.user, e.instance_id, e.reason) for e in events] == [
        ("stop", "ghost", "i-g", "reaper")
    ]
    clock.now += 100
    assert reaper.round() == []  # stopped now: nothing more to do


def test_a_server_appearing_resets_the_clock(tmp_path: Path) -> None:
    hub = FakeHub()
    reaper, ec2, clock = make([worker("i-b", "bob")], hub, tmp_path)
    reaper.round()
    clock.now += GRACE - 1
    hub.wanted.add("bob")  # bob logs in: his worker is wanted again
    reaper.round()
    hub.wanted.clear()  # and leaves without the instance stopping (e.g. a failed stop)
    clock.now += 2
    assert reaper.round() == []  # a new grace period starts now
    clock.now += GRACE
    assert reaper.round() == ["i-b"]
    assert ec2.stopped == ["i-b"]


def test_last_look_at_the_user_prevents_a_racing_stop(tmp_path: Path) -> None:
    hub = FakeHub(wants_on_recheck={"carol"})  # carol's spawn began after the listing
    reaper, ec2, clock = make([worker("i-c", "carol")], hub, tmp_path)
    reaper.round()
    clock.now += GRACE
    assert reaper.round() == []
    assert ec2.stopped == []


def test_nothing_is_stopped_while_the_hub_or_ec2_cannot_answer(tmp_path: Path) -> None:
    hub = FakeHub()
    reaper, ec2, clock = make([worker("i-g", "ghost")], hub, tmp_path)
    reaper.round()
    clock.now += GRACE * 5
    hub.down = True  # the hub restarting: every user looks serverless
    assert reaper.round() == []
    hub.down, ec2.fail = False, True
    assert reaper.round() == []
    assert ec2.stopped == []
    ec2.fail = False
    assert reaper.round() == ["i-g"]


def test_pending_orphan_is_reported_then_stopped_once_it_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeHub()
    reaper, ec2, clock = make(
        [worker("i-p", "ghost", "pending"), worker("i-s", "ghost2", "stopping")], hub, tmp_path
    )
    reaper.round()
    clock.now += GRACE
    with caplog.at_level("WARNING", logger="cloudjhub.reaper"):
        assert reaper.round() == []  # EC2 cannot stop a pending instance
        assert reaper.round() == []
    pending = [r for r in caplog.records if "pending" in r.getMessage()]
    assert len(pending) == 1, "reported once, not every round"
    assert "once it runs" in pending[0].getMessage()
    assert any("stopping" in r.getMessage() for r in caplog.records)
    ec2.workers = [worker("i-p", "ghost", "running"), *ec2.workers[1:]]
    assert reaper.round() == ["i-p"]  # no second grace period


def test_guarded_stop_with_moto(
    ec2: LocalCloudEc2,
    other_ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
    tmp_path: Path,
    calls: ApiCalls,
) -> None:
    """The real LocalCloudEc2: only this cluster's workers are listed, and stopped through the guard."""
    mine = make_worker("ghost")
    theirs = make_worker("ghost", other_ec2)
    clock = Clock()
    reaper = Reaper(ec2, FakeHub(), 0.0, str(tmp_path / "usage.jsonl"), clock)  # type: ignore[arg-type]
    before = dict(calls)
    assert reaper.round() == [mine.id]
    made = {k: n for k, v in calls.items() if (n := v - before.get(k, 0))}
    # One listing, the guard's re-read, one stop.
    assert made == {"DescribeInstances": 2, "StopInstances": 1}
    states = {i.id: i.state for i in ec2.describe([mine.id, theirs.id])}
    assert states[mine.id] in ("stopping", "stopped")
    assert states[theirs.id] == "running"


# --------------------------------------------------------------------------- the hub API


@dataclass
class FakeHubServer:
    url: str
    requests: list[tuple[str, dict[str, str]]]


@pytest.fixture
def hub_server() -> Iterator[FakeHubServer]:
    """A stand-in hub REST API on loopback: three users with servers over two pages."""
    users = [
        {"name": "a", "servers": {"": {"ready": True}}},
        {"name": "b", "servers": {"": {"pending": "spawn"}}},
        {"name": "idle", "servers": {}},
        {"name": "c", "servers": {"": {"ready": True}, "gpu": {"ready": True}}},
    ]
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, dict(self.headers)))
            url = urlsplit(self.path)
            body: Any
            if url.path == "/hub/api/users":
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                offset = int(q["offset"])
                page = users[offset : offset + 2]
                nxt = {"offset": offset + 2} if offset + 2 < len(users) else None
                body = {"items": page, "_pagination": {"offset": offset, "next": nxt}}
            elif url.path.startswith("/hub/api/users/"):
                name = url.path.rsplit("/", 1)[1]
                found = [u for u in users if u["name"] == name]
                if not found:
                    self.send_error(404)
                    return
                body = found[0]
            else:
                self.send_error(500)
                return
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeHubServer(f"http://127.0.0.1:{server.server_port}/hub/api", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_hub_api_follows_pages_and_sends_the_token(hub_server: FakeHubServer) -> None:
    api = HubApi(hub_server.url, "secret-token")
    assert api.servers_in_use() == {("a", ""), ("b", ""), ("c", ""), ("c", "gpu")}
    paths = [p for p, _ in hub_server.requests]
    assert len(paths) == 2 and all("state=active" in p for p in paths)
    assert all(h["Authorization"] == "token secret-token" for _, h in hub_server.requests)
    assert api.has_server("a") is True
    assert api.has_server("idle") is False
    assert api.has_server("c", "gpu") is True
    assert api.has_server("a", "gpu") is False  # a's default server is not her "gpu"
    assert api.has_server("nobody") is False  # 404: no such user, so no server


def test_hub_api_down_is_unavailable_not_empty() -> None:
    api = HubApi("http://127.0.0.1:9/hub/api", "t", timeout=2)
    with pytest.raises(HubUnavailable):
        api.servers_in_use()
    with pytest.raises(HubUnavailable):
        api.has_server("a")
