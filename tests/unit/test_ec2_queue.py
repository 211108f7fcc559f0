"""The hub's EC2 queue against moto, behind the like-AWS layer's own decisions (its
buckets and its injected faults, run in this process): concurrent spawns and stops
coalesced into one call each, a burst paced so AWS never refuses it, users told their
place in the queue, and capacity fallback across types and subnets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub, Server
from traitlets import TraitError

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.aws.pacing import Pacer
from cloudjhub.ec2_queue import MAX_BATCH, Ec2Queue
from cloudjhub.fleet import Fleet
from cloudjhub.local.awslike.buckets import Throttle
from cloudjhub.local.awslike.layer import Layer
from cloudjhub.local.awslike.settings import Behaviour, parse_fault
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.spawner_ec2 import Ec2Calls
from cloudjhub.spawner_options import SpawnError
from cloudjhub.tags import POOL_TAG, USER_ID_TAG
from tests.unit.conftest import CLUSTER, REGION, Network


class Answered:
    """What botocore needs of an HTTP response the layer answered itself."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


@pytest.fixture
def layer(ec2: LocalCloudEc2) -> Iterator[Layer]:
    """The like-AWS layer's request decisions (throttling, faults) on every call the
    `ec2` fixture's client makes, after the hub's own hooks (its pacing) have run."""
    decide = Layer(Behaviour(time_scale=0.01), ec2)

    def before(model: Any, params: dict[str, Any], **_: Any) -> Any:
        body = {k: str(v) for k, v in (params.get("body") or {}).items()}
        answer = decide.before(model.name, body, internal=False)
        if answer is None:
            return None
        code = answer.body.decode().split("<Code>")[1].split("</Code>")[0]
        return Answered(answer.status), {"Error": {"Code": code, "Message": code}}

    ec2.client.meta.events.register_last("before-call.ec2.*", before)
    yield decide
    ec2.client.meta.events.unregister("before-call.ec2.*", before)


@pytest.fixture
def spawner_for(
    ec2: LocalCloudEc2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., InstanceSpawner]:
    """A hub's spawner (no hub) on the moto-backed fleet; Jupyter 'starts' at once."""
    monkeypatch.setitem(Fleet._shared, (CLUSTER, REGION, ""), Fleet(ec2, max_age=0))
    monkeypatch.setattr(Ec2Queue, "_shared", {})
    monkeypatch.setattr(Ec2Calls, "_types_checked", set())
    ids: dict[str, int] = {}

    async def no_jupyter(inst: Instance, home: Any) -> str:
        return f"http://{inst.private_ip}:8888"

    def make(user: str, **traits: Any) -> InstanceSpawner:
        user_id = ids.setdefault(user, len(ids) + 1)
        hub_user = SimpleNamespace(id=user_id, name=user, escaped_name=user, url=f"/user/{user}/")
        spawner = InstanceSpawner(user=hub_user, hub=Hub(), oauth_client_id=f"jupyterhub-{user}")
        spawner.cluster_name, spawner.region, spawner.aws_endpoint_url = CLUSTER, REGION, None
        spawner.worker_instance_type = "t3.medium"
        spawner.hibernate = False
        spawner.warm_pool_size = 0
        spawner.warm_pool_schedule = []
        spawner.user_home_ebs_size = 0
        spawner.subnet_ids = []
        spawner.shared_file_system_id = ""  # no shared folder, so no workers' profile
        spawner.idle_timeout = 3600
        spawner.state_poll_interval = 0.05
        spawner.usage_log = str(tmp_path / "usage.jsonl")
        spawner.server = Server(base_url=f"/user/{user}/")
        for name, value in traits.items():
            setattr(spawner, name, value)
        monkeypatch.setattr(spawner, "_start_jupyter", no_jupyter)
        monkeypatch.setattr(spawner, "launch_tags", lambda _user, _server: {})  # no EXTRA_TAGS
        return spawner

    return make


@pytest.fixture
def configured(
    spawner_for: Callable[..., InstanceSpawner], spec: WorkerSpec, network: Network
) -> Callable[..., InstanceSpawner]:
    def make(user: str, **traits: Any) -> InstanceSpawner:
        spawner = spawner_for(user, **traits)
        spawner.worker_ami, spawner.subnet_id = spec.image_id, network.subnet_id
        spawner.security_group_ids, spawner.key_name = list(spec.security_group_ids), spec.key_name
        spawner.worker_ebs_size = spec.ebs_size
        return spawner

    return make


async def spawn_all(spawners: list[InstanceSpawner]) -> list[str]:
    return list(await asyncio.gather(*(s.start() for s in spawners)))


async def progress_of(spawner: InstanceSpawner) -> list[str]:
    return [e["message"] async for e in spawner.progress()]


# ---- coalescing -----------------------------------------------------------------------


def test_concurrent_first_logins_stops_and_restarts_are_one_call_each(
    ec2: LocalCloudEc2, calls: Any, layer: Layer, configured: Callable[..., InstanceSpawner]
) -> None:
    spawners = [configured(f"user{n}") for n in range(6)]

    asyncio.run(spawn_all(spawners))

    assert calls["RunInstances"] == 1
    owners = {s.instance_id: s for s in spawners}
    assert len(owners) == 6  # one instance each, none shared
    for inst in ec2.describe([i for i in owners if i]):
        assert inst.user == owners[inst.id].user.name and POOL_TAG not in inst.tags
        assert inst.tags[USER_ID_TAG] == owners[inst.id].user_id
    assert len(ec2.describe_workers()) == 6  # nothing more

    async def stop_all() -> None:
        await asyncio.gather(*(s.stop() for s in spawners))

    asyncio.run(stop_all())
    assert calls["StopInstances"] == 1
    asyncio.run(spawn_all(spawners))
    assert calls["StartInstances"] == 1
    assert calls["RunInstances"] == 1
    assert layer.throttle.throttled == {}


def test_a_batch_error_about_one_instance_fails_only_its_spawner(
    ec2: LocalCloudEc2,
    calls: Any,
    layer: Layer,
    configured: Callable[..., InstanceSpawner],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawners = [configured(f"user{n}", hibernate=False) for n in range(3)]
    asyncio.run(spawn_all(spawners))
    calls.clear()
    # Hibernating stops: AWS refuses the whole call for one instance that cannot
    # hibernate; that spawner alone falls back to a plain stop.
    odd = spawners[1].instance_id
    real = ec2.stop_workers

    def stop_workers(ids: list[str], hibernate: bool, paid: Any = None) -> None:
        if hibernate and odd in ids:
            from cloudjhub.aws.client import CloudError

            raise CloudError("cannot hibernate", "UnsupportedHibernationConfiguration")
        real(ids, hibernate, paid)

    monkeypatch.setattr(ec2, "stop_workers", stop_workers)
    for s in spawners:
        s.hibernate = True

    async def stop_all() -> None:
        await asyncio.gather(*(s.stop() for s in spawners))

    asyncio.run(stop_all())
    states = {i.id: i.state for i in ec2.describe([s.instance_id for s in spawners])}
    assert set(states.values()) <= {"stopping", "stopped"}
    assert calls["StopInstances"] == 3  # the two others together, then the odd one plainly


# ---- client-side buckets --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("action", "per_request"),
    [("StartInstances", 1), ("RunInstances", 1), ("StopInstances", 5), ("CreateTags", 0)],
)
def test_a_paced_burst_is_never_refused_by_awss_buckets(action: str, per_request: int) -> None:
    clock = Clock()
    aws, unpaced = Throttle(clock), Throttle(clock)
    pacer = Pacer(clock=clock, reserve_fraction=0)
    params = {f"InstanceId.{n}": f"i-{n:08x}" for n in range(1, per_request + 1)}
    if action == "RunInstances":
        params = {"MaxCount": "1"}
    refused_unpaced = sum(not unpaced.admit(action, params) for _ in range(300))
    for _ in range(300):
        ticket = pacer.reserve(action, per_request)
        clock.now = max(clock.now, ticket.ready_at)
        assert aws.admit(action, params)
    assert aws.throttled == {}
    assert refused_unpaced > 0  # the same burst, unpaced, is refused


def test_each_action_has_a_bucket_of_its_own_sized_by_its_family() -> None:
    clock = Clock()
    pacer = Pacer({"non-mutating": (2.0, 1.0)}, clock=clock, reserve_fraction=0)
    now = clock.now
    went = [pacer.reserve(a).ready_at for a in ("DescribeInstances", "DescribeVolumes") * 2]
    assert went == [now] * 4
    assert pacer.reserve("DescribeInstances").ready_at == pytest.approx(now + 1, abs=0.01)
    # Unfiltered describes spend a smaller bucket of their own (AWS's 50 + 10/s).
    assert pacer.reserve("DescribeInstances", filtered=False).ready_at == now


def test_the_pacer_paces_every_call_of_a_client(
    ec2: LocalCloudEc2, layer: Layer, make_worker: Callable[..., Instance]
) -> None:
    clock = Clock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    workers = [make_worker(f"u{n}") for n in range(2)]
    Pacer({"CreateTags": (2.0, 1.0)}, clock=clock, sleep=sleep, reserve_fraction=0).attach(
        ec2.client
    )
    for n in range(4):
        ec2.client.create_tags(Resources=[workers[0].id], Tags=[{"Key": "k", "Value": str(n)}])
    assert slept == pytest.approx([1.0, 1.0], abs=0.01)


# ---- queue position -------------------------------------------------------------------


def test_users_waiting_for_ec2_see_their_place_and_the_wait(
    calls: Any, layer: Layer, configured: Callable[..., InstanceSpawner]
) -> None:
    slow = {"ec2_coalesce_window": 0.0, "ec2_request_buckets": {"RunInstances": [1, 4]}}
    spawners = [configured(f"user{n}", **slow) for n in range(3)]

    async def go() -> list[list[str]]:
        readers = [asyncio.ensure_future(progress_of(s)) for s in spawners]
        await asyncio.sleep(0)
        await spawn_all(spawners)
        return list(await asyncio.gather(*readers))

    seen = asyncio.run(go())

    waits = sorted((m for ms in seen for m in ms if m.startswith("Waiting for EC2")), reverse=True)
    assert calls["RunInstances"] == 3
    assert "Waiting for EC2: you are number 2 in the queue, about 1 seconds" in waits
    last = next(ms for ms in seen if any("number 2" in m for m in ms))
    # The last in line moves up as the one before goes.
    place = [m for m in last if m.startswith("Waiting for EC2")]
    assert "number 2" in place[0] and "number 1" in place[-1]
    assert layer.throttle.throttled == {}


@pytest.mark.parametrize(
    ("trait", "value", "named"),
    [
        ("ec2_request_buckets", {"Nonsense": [1, 1]}, "ec2_request_buckets: 'Nonsense'"),
        ("ec2_request_buckets", {"RunInstances": [0, 1]}, "ec2_request_buckets: 'RunInstances'"),
        ("ec2_request_buckets", {"mutating": [5, "x"]}, "ec2_request_buckets: 'mutating'"),
        ("ec2_coalesce_window", -1.0, "ec2_coalesce_window: -1.0"),
        ("ec2_coalesce_window", float("nan"), "ec2_coalesce_window: nan"),
        ("worker_instance_type_fallbacks", ["t3.large; rm"], "worker_instance_type_fallbacks"),
        ("subnet_ids", ["subnet-xyz"], "subnet_ids: 'subnet-xyz'"),
    ],
)
def test_bad_trait_values_are_one_line_naming_the_trait(
    spawner_for: Callable[..., InstanceSpawner], trait: str, value: Any, named: str
) -> None:
    with pytest.raises(TraitError) as caught:
        spawner_for("alice", **{trait: value})
    assert str(caught.value).startswith(named) and "\n" not in str(caught.value)


# ---- capacity fallback ----------------------------------------------------------------


@pytest.fixture
def second_subnet(ec2: LocalCloudEc2, network: Network) -> str:
    return ec2.ensure_subnet(network.vpc_id, "10.42.9.0/24", {"Name": "second"})


def test_no_capacity_tries_the_next_subnet_then_the_next_type(
    ec2: LocalCloudEc2,
    layer: Layer,
    configured: Callable[..., InstanceSpawner],
    network: Network,
    second_subnet: str,
) -> None:
    first = network.subnet_id
    layer.faults.set_rates(
        dict(
            parse_fault(f)
            for f in (
                "InsufficientInstanceCapacity=t3.medium",
                f"InsufficientInstanceCapacity=t3.large@{first}",
            )
        )
    )
    alice = configured(
        "alice", worker_instance_type_fallbacks=["t3.large"], subnet_ids=[first, second_subnet]
    )
    asyncio.run(alice.start())
    [inst] = ec2.describe([alice.instance_id or ""])
    assert (inst.instance_type, inst.user) == ("t3.large", "alice")
    assert layer.faults.injected == {
        "InsufficientInstanceCapacity=t3.medium": 2,
        f"InsufficientInstanceCapacity=t3.large@{first}": 1,
    }


def test_no_capacity_anywhere_names_everything_tried(
    layer: Layer, configured: Callable[..., InstanceSpawner], network: Network, second_subnet: str
) -> None:
    layer.faults.set_rates({"InsufficientInstanceCapacity": 1.0})
    alice = configured(
        "alice",
        worker_instance_type_fallbacks=["t3.large"],
        subnet_ids=[network.subnet_id, second_subnet],
    )
    with pytest.raises(SpawnError) as caught:
        asyncio.run(alice.start())
    message = str(caught.value)
    assert message.startswith("AWS has no spare t3.medium or t3.large capacity right now; tried")
    for kind in ("t3.medium", "t3.large"):
        for subnet in (network.subnet_id, second_subnet):
            assert f"{kind} in {subnet}" in message


def test_a_fallback_type_the_region_does_not_have_refuses_to_launch(
    calls: Any, configured: Callable[..., InstanceSpawner]
) -> None:
    alice = configured("alice", worker_instance_type_fallbacks=["t3.large", "x9.nonsense"])
    with pytest.raises(SpawnError) as caught:
        asyncio.run(alice.start())
    assert "worker_instance_type_fallbacks: 'x9.nonsense'" in str(caught.value)
    assert calls["RunInstances"] == 0


def test_a_storm_is_cut_into_calls_of_at_most_max_batch_ids() -> None:
    sent: list[list[str]] = []

    class Recording:
        def start_workers(self, ids: list[str], paid: Any = None) -> None:
            sent.append(ids)

    queue = Ec2Queue(Recording(), window=0.2, pacer=None)  # type: ignore[arg-type]

    async def storm() -> None:
        await asyncio.gather(*(queue.start(f"i-{n:08x}") for n in range(MAX_BATCH + 50)))

    asyncio.run(storm())
    assert [len(ids) for ids in sent] == [MAX_BATCH, 50]


def test_no_capacity_falls_back_only_within_the_home_volumes_zone(
    ec2: LocalCloudEc2, layer: Layer, configured: Callable[..., InstanceSpawner], network: Network
) -> None:
    """A returning user's home volume is zonal (EBS attaches only in its zone): a
    subnet of another zone is never tried, and the message says why."""
    first = network.subnet_id
    [found] = ec2.client.describe_subnets(SubnetIds=[first])["Subnets"]
    home_zone = found["AvailabilityZone"]
    other_zone = next(z for z in ("us-east-1a", "us-east-1b") if z != home_zone)

    def subnet(cidr: str, zone: str) -> str:
        made = ec2.client.create_subnet(VpcId=network.vpc_id, CidrBlock=cidr, AvailabilityZone=zone)
        return str(made["Subnet"]["SubnetId"])

    elsewhere, beside = subnet("10.42.20.0/24", other_zone), subnet("10.42.21.0/24", home_zone)
    ec2.create_home_volume("alice", 1, home_zone, "1")
    layer.faults.set_rates(dict([parse_fault(f"InsufficientInstanceCapacity={first}")]))
    alice = configured("alice", user_home_ebs_size=1, subnet_ids=[first, elsewhere, beside])

    asyncio.run(alice.start())

    [inst] = ec2.describe([alice.instance_id or ""])
    assert inst.availability_zone == home_zone and inst.user == "alice"

    layer.faults.set_rates({"InsufficientInstanceCapacity": 1.0})
    bob = configured("bob", user_home_ebs_size=1, subnet_ids=[first, elsewhere, beside])
    ec2.create_home_volume("bob", 1, home_zone, "2")
    with pytest.raises(SpawnError) as caught:
        asyncio.run(bob.start())
    said = str(caught.value)
    assert f"t3.medium in {first}, t3.medium in {beside} (only {home_zone}," in said
    assert elsewhere not in said


def test_per_user_extra_tags_do_not_split_a_launch(
    ec2: LocalCloudEc2, calls: Any, layer: Layer, configured: Callable[..., InstanceSpawner]
) -> None:
    """EXTRA_TAGS with {username} differ per user: still one RunInstances, the shared
    tags on at launch and each user's own tag on their instance and its volume."""
    spawners = [configured(f"user{n}") for n in range(3)]
    for spawner in spawners:
        tags = {"course": "cs101", "owner": spawner.user.name}
        spawner.launch_tags = lambda _user, _server, tags=tags: tags  # type: ignore[method-assign]

    asyncio.run(spawn_all(spawners))

    assert calls["RunInstances"] == 1
    for spawner in spawners:
        [inst] = ec2.describe([spawner.instance_id or ""])
        assert (inst.tags["owner"], inst.tags["course"]) == (spawner.user.name, "cs101")
        assert inst.user == spawner.user.name
        volume = ec2.client.describe_tags(
            Filters=[{"Name": "resource-id", "Values": [inst.volumes[0]]}]
        )["Tags"]
        assert {"Key": "owner", "Value": spawner.user.name} in [
            {"Key": t["Key"], "Value": t["Value"]} for t in volume
        ]
