"""The pacer's headroom and its learning (issue 10: a storm is never refused).

A burst planned by the pacer is played against the like-AWS layer's own buckets
(`local/awslike/buckets.py`) on a virtual clock, as AWS would see it: requests late
on their way, or another caller spending the same account's bucket. Then a real
boto3 client, throttled once by a server on loopback, teaches the pacer its bucket
is empty."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from click.testing import CliRunner
from traitlets import TraitError

from cloudjhub.aws.pacing import Pacer, reserve_tokens
from cloudjhub.local.awslike.buckets import Throttle

STORM = 30  # StartInstances calls, one instance each
CAPACITY, REFILL = 5.0, 2.0  # AWS's StartInstances bucket


def play(
    pacer_sends: list[float],
    delays: list[float],
    outside: Sequence[float] = (),
) -> int:
    """Requests sent at `pacer_sends` (plus, for each, its delay on the way) and the
    outside caller's at `outside`, as the layer's buckets admit them by arrival: how
    many the layer refused."""
    now = [0.0]
    layer = Throttle(clock=lambda: now[0])
    arrivals = sorted([s + d for s, d in zip(pacer_sends, delays, strict=True)] + list(outside))
    refused = 0
    for at in arrivals:
        now[0] = at
        refused += not layer.admit("StartInstances", {"InstanceId.1": "i-1"})
    return refused


def planned(pacer_clock: list[float]) -> list[float]:
    """A storm's StartInstances, all asked at t=0, through the pacer's default plan."""
    pacer = Pacer(clock=lambda: pacer_clock[0])
    return [pacer.reserve("StartInstances", 1).ready_at for _ in range(STORM)]


def test_a_burst_late_on_its_way_is_never_refused() -> None:
    """Some requests of the storm arrive up to 0.3 s late (a busy server, a loaded
    machine): the first burst, arriving after AWS's bucket capped, leaves it short for
    the next request that arrives on time. The old plan (spend to zero) is refused;
    with a reserve nothing is, and the storm still goes at AWS's refill rate."""
    sends = planned([0.0])
    rng = random.Random(7)
    for _ in range(20):
        # The burst is late (it waited on a connection); the rest mostly on time.
        delays = [0.3 if at == 0.0 else rng.choice((0.0, 0.0, 0.2)) for at in sends]
        assert play(sends, delays) == 0
    reserve = reserve_tokens(CAPACITY, 0.1)
    assert reserve == 1
    # Only the burst shrank: the last goes when a bucket of CAPACITY - reserve lets it.
    assert max(sends) == pytest.approx((STORM - (CAPACITY - reserve)) / REFILL, abs=0.01)


def test_another_caller_spending_the_bucket_refuses_nothing() -> None:
    """The console (or any tool without the buckets file) starts one instance as the
    storm begins: AWS's bucket is one token short of the pacer's copy."""
    sends = planned([0.0])
    assert play(sends, [0.0] * STORM, outside=[0.0]) == 0
    assert play(sends, [0.0] * STORM, outside=[5.0]) == 0


def test_reserve_sizes() -> None:
    assert [reserve_tokens(c, 0.1) for c in (1, 2, 5, 50, 100, 1000)] == [0, 1, 1, 5, 10, 100]
    assert reserve_tokens(5, 0) == 0
    assert reserve_tokens(5, 0.5) == 2
    with pytest.raises(ValueError, match=r"from 0 to 0\.5"):
        Pacer(reserve_fraction=0.6)


def test_the_reserve_is_a_spawner_trait_and_a_keeper_option() -> None:
    from cloudjhub.cli import main
    from cloudjhub.spawner import InstanceSpawner

    assert InstanceSpawner(ec2_bucket_reserve=0.2).ec2_bucket_reserve == 0.2
    with pytest.raises(TraitError, match=r"ec2_bucket_reserve: .*from 0 to 0\.5"):
        InstanceSpawner(ec2_bucket_reserve=0.9)
    for bad in ("2", "nan"):
        result = CliRunner().invoke(main, ["warm-pool", "--once", "--ec2-bucket-reserve", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "--ec2-bucket-reserve" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["warm-pool", "--once", "--interval", "inf"])
    assert result.exit_code == 2 and "--interval" in result.output, result.output


# ---- learning from a refusal, through a real boto3 client ---------------------------

THROTTLED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
    b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    b"</Error></Errors><RequestID>r-1</RequestID></Response>"
)
EMPTY = (
    b'<?xml version="1.0" encoding="UTF-8"?><DescribeInstancesResponse '
    b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-2</requestId>'
    b"<reservationSet/></DescribeInstancesResponse>"
)


class _Ec2(BaseHTTPRequestHandler):
    """EC2 on loopback that throttles the first request it gets, then answers."""

    calls: list[int] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append(1)
        status, body = (503, THROTTLED) if len(self.calls) == 1 else (200, EMPTY)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def throttling_ec2() -> Iterator[str]:
    _Ec2.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ec2)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def paced_client(pacer: Pacer, endpoint: str) -> Any:
    """A boto3 EC2 client to `endpoint`, botocore's standard retry, paced by `pacer`."""
    client = boto3.session.Session().client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )
    pacer.attach(client)
    return client


def test_a_throttled_answer_empties_the_pacers_bucket(throttling_ec2: str) -> None:
    """DescribeInstances is refused once: botocore's retry still gets the answer, and
    the pacer's copy of the bucket is empty less the retry's token, so its next request
    waits for the refill (reserve + 2 tokens at 20 a second) instead of going at once
    into another refusal."""
    now = [1000.0]  # botocore's backoff must not refill the bucket meanwhile
    pacer = Pacer(clock=lambda: now[0])
    client = paced_client(pacer, throttling_ec2)
    filters = [{"Name": "tag:cloudjhub:cluster", "Values": ["c"]}]
    assert client.describe_instances(Filters=filters)["Reservations"] == []
    assert len(_Ec2.calls) == 2  # botocore retried, as before

    wait = pacer.reserve("DescribeInstances").ready_at - now[0]
    reserve = reserve_tokens(100, 0.1)
    assert wait == pytest.approx((reserve + 2) / 20, abs=0.01)
    # Another action's bucket is untouched.
    assert pacer.reserve("CreateTags").ready_at == now[0]


def test_a_pacer_that_cannot_note_a_throttle_leaves_botocores_retry_alone(
    throttling_ec2: str, tmp_path: Path
) -> None:
    """The shared buckets file fails while EC2 throttles: the call still gets
    botocore's retry and its answer, not the file's error."""
    pacer = Pacer()
    client = paced_client(pacer, throttling_ec2)

    def broken(*_: object, **__: object) -> None:
        raise OSError(5, "Input/output error", str(tmp_path / "buckets"))

    pacer.drain = broken  # type: ignore[method-assign]
    filters = [{"Name": "tag:cloudjhub:cluster", "Values": ["c"]}]
    assert client.describe_instances(Filters=filters)["Reservations"] == []
    assert len(_Ec2.calls) == 2


def test_a_throttle_in_a_storm_still_teaches_the_pacer() -> None:
    """The EC2 queue reserves before it calls, so in a storm the copy is in debt when
    AWS refuses: the refused call's retry is one more token the plan must wait for."""
    now = [1000.0]

    def last_of(pacer: Pacer, drained: bool) -> float:
        for _ in range(12):
            pacer.reserve("StartInstances")
        if drained:
            pacer.drain("StartInstances")
        return pacer.reserve("StartInstances").ready_at

    plain = last_of(Pacer(clock=lambda: now[0]), drained=False)
    taught = last_of(Pacer(clock=lambda: now[0]), drained=True)
    assert taught - plain == pytest.approx(1 / 2, abs=0.01)  # StartInstances: 2 a second


def test_the_hub_gives_its_keeper_the_same_reserve(tmp_path: Path) -> None:
    """Through the hub's config: the spawner's ec2_bucket_reserve reaches the keeper
    service's command line, which accepts it."""
    from tests.unit.test_warm_pool_settings import services, settings

    keeper = services(settings(tmp_path, ec2_bucket_reserve=0.25))["cloudjhub-warm-pool"]
    command = keeper["command"]
    assert command[command.index("--ec2-bucket-reserve") + 1] == "0.25"
