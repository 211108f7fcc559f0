"""Issue 10: a big launch's instances each boot once, and each console shows its host key.

moto makes a RunInstances' instances one by one, already `running`, before the
like-AWS layer has seen the reply that makes them `pending`. The fleet emulator
looked in between, booted some (printing their keys), halted them when they
showed `pending`, and booted them again with "keys-to-console already ran": their
consoles never showed a key. Driven through the real layer (a proxy in front of
an in-process moto) and the real emulator; only sshd is a stand-in.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloudjhub.aws.client import RETRY_CONFIG, Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.local import emulator, fleet_states, motoserver, processes, sshd
from cloudjhub.local.awslike.proxy import AwsLikeProxy
from cloudjhub.local.awslike.settings import Behaviour
from cloudjhub.local.emulator_log import LOG_NAME

SCALE = 0.02  # pending 0.6 s


@dataclass
class Cloud:
    proxy: AwsLikeProxy
    ec2: Any  # a client's boto3 client, through the layer
    ami: str
    subnet: str


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {**motoserver.LOCAL_CREDENTIALS, **motoserver.VALIDATION_FLAGS}.items():
            mp.setenv(var, value)
        moto = motoserver.LocalEc2()
        upstream = moto.start()
        for var, value in moto.credentials.items():
            mp.setenv(var, value)
        proxy = AwsLikeProxy(upstream, "us-east-1", Behaviour(time_scale=SCALE))
        proxy.start()
        try:
            ec2 = boto3.session.Session().client(
                "ec2",
                region_name="us-east-1",
                endpoint_url=proxy.url,
                config=RETRY_CONFIG,
                aws_access_key_id=moto.credentials["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=moto.credentials["AWS_SECRET_ACCESS_KEY"],
            )
            vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.16.0/20")["Subnet"]["SubnetId"]
            ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            yield Cloud(proxy, ec2, ami, subnet)
        finally:
            proxy.stop()
            moto.stop()


class FakeSshd:
    pid = -1

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def boots(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Machines' boots by instance id; each machine's host key names its instance."""
    counted: Counter[str] = Counter()

    def start_sshd(root: Path, *_: Any) -> FakeSshd:
        counted[root.name] += 1
        return FakeSshd()

    monkeypatch.setattr(sshd, "start_sshd", start_sshd)
    monkeypatch.setattr(
        sshd, "ensure_host_key", lambda etc: f"ssh-ed25519 KEY{etc.parent.parent.name}"
    )
    monkeypatch.setattr(sshd, "end_pids", lambda pids: None)
    monkeypatch.setattr(processes, "machine_pids", lambda root, instance_id: [])
    return counted


def _running(c: Cloud) -> set[str]:
    reply = c.ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["running"]}]
    )
    return {i["InstanceId"] for r in reply["Reservations"] for i in r["Instances"]}


def _console(c: Cloud, instance_id: str) -> str:
    reply = c.ec2.get_console_output(InstanceId=instance_id, Latest=True)
    return str(reply.get("Output") or "")


def test_a_launch_of_many_boots_each_machine_once_with_its_keys_on_the_console(
    cloud: Cloud, boots: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = emulator.FleetEmulator(
        LocalCloudEc2.connect("launch", "us-east-1", cloud.proxy.internal_url),
        tmp_path,
        2222,
        console=cloud.proxy.layer.console.write,
        host_keys_once=True,
    )
    seen_mid_launch: list[set[str]] = []
    forward = cloud.proxy.upstream

    def upstream(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        reply = forward(method, path, headers, body)
        if b"Action=RunInstances" in body:
            # The emulator looks while the launch's reply is on its way back.
            fleet.reconcile()
            seen_mid_launch.append(set(fleet.machines))
        return reply

    monkeypatch.setattr(cloud.proxy, "upstream", upstream)
    launched = cloud.ec2.run_instances(
        ImageId=cloud.ami, MinCount=20, MaxCount=20, SubnetId=cloud.subnet, InstanceType="t3.micro"
    )
    ids = [i["InstanceId"] for i in launched["Instances"]]
    deadline = time.monotonic() + 15
    while _running(cloud) != set(ids) or set(fleet.machines) != set(ids):
        assert time.monotonic() < deadline, f"booted only {sorted(fleet.machines)}"
        fleet.reconcile()
        time.sleep(0.1)
    fleet.reconcile()

    missing = [i for i in ids if f"KEY{i}" not in _console(cloud, i)]
    assert not missing, f"{len(missing)} of {len(ids)} consoles show no host key"
    assert {i: boots[i] for i in ids} == dict.fromkeys(ids, 1)
    # Nothing booted while the launch was in flight: AWS showed it pending.
    assert seen_mid_launch == [set()]
    fleet.stop()


class ListedEc2:
    """An EC2 whose listing a test controls."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def describe_all(self) -> list[Instance]:
        return [
            Instance(i, state, "t3.small", f"127.9.0.{n + 1}", None, "us-east-1a")
            for n, (i, state) in enumerate(self.states.items())
        ]

    def public_keys(self) -> dict[str, str]:
        return {}


def test_a_machine_is_halted_only_when_ec2_takes_it_down(
    boots: Counter[str], tmp_path: Path
) -> None:
    ec2 = ListedEc2()
    ec2.states = {"i-0000000000000000a": "running", "i-0000000000000000b": "running"}
    consoles: dict[str, str] = {}
    fleet = emulator.FleetEmulator(
        ec2,  # type: ignore[arg-type]
        tmp_path,
        2222,
        console=consoles.__setitem__,
        host_keys_once=True,
    )
    fleet.reconcile()
    ec2.states = {"i-0000000000000000a": "pending"}  # b missing from this listing
    fleet.reconcile()
    assert sorted(fleet.machines) == ["i-0000000000000000a", "i-0000000000000000b"]
    ec2.states = {"i-0000000000000000a": "stopping", "i-0000000000000000b": "running"}
    fleet.reconcile()
    assert sorted(fleet.machines) == ["i-0000000000000000b"]
    assert dict(boots) == {"i-0000000000000000a": 1, "i-0000000000000000b": 1}
    assert all("KEYi-" in text for text in consoles.values())


def test_keys_count_as_printed_only_once_the_console_has_them(
    boots: Counter[str], tmp_path: Path
) -> None:
    """A boot that failed before its console was written prints the keys on the next."""
    ec2 = ListedEc2()
    ec2.states = {"i-0000000000000000c": "running"}
    consoles: dict[str, str] = {}
    failing = [True]

    def console(instance_id: str, text: str) -> None:
        if failing.pop() if failing else False:
            raise OSError("console not reachable")
        consoles[instance_id] = text

    fleet = emulator.FleetEmulator(
        ec2,  # type: ignore[arg-type]
        tmp_path,
        2222,
        console=console,
        host_keys_once=True,
    )
    fleet.reconcile()  # the boot fails at the console (logged, kept as booted)
    ec2.states = {"i-0000000000000000c": "stopped"}
    fleet.reconcile()
    ec2.states = {"i-0000000000000000c": "running"}
    fleet.reconcile()
    assert "KEYi-0000000000000000c" in consoles["i-0000000000000000c"]


def test_the_emulator_logs_to_a_file_in_its_state_dir(boots: Counter[str], tmp_path: Path) -> None:
    ec2 = ListedEc2()
    ec2.states = {"i-0000000000000000d": "running"}
    fleet = emulator.FleetEmulator(
        ec2,  # type: ignore[arg-type]
        tmp_path,
        2222,
        publish_console=False,
        interval=60,
    )
    fleet.start()
    fleet.stop()
    text = (tmp_path / LOG_NAME).read_text()
    assert "booted i-0000000000000000d" in text
    assert "halted i-0000000000000000d" in text
    assert (tmp_path / LOG_NAME).stat().st_mode & 0o777 == 0o600


def _wait(predicate: Any, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_embedded_moto_is_read_in_process_with_the_layers_states(
    cloud: Cloud, boots: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 (emulator cost): no DescribeInstances per pass, and behaviour unchanged:
    pending does not boot, running does, stopping halts, and an instance gone from
    moto's backend (L8) halts at once."""
    ec2 = LocalCloudEc2.connect("states", "us-east-1", cloud.proxy.internal_url)
    fleet = emulator.FleetEmulator(
        ec2,
        tmp_path,
        2222,
        console=cloud.proxy.layer.console.write,
        host_keys_once=True,
        states=fleet_states.moto_source("us-east-1", cloud.proxy.layer.lifecycle.visible),
    )
    describes: list[str] = []  # at the layer (any client) and at the emulator's botocore
    forward = cloud.proxy.upstream

    def upstream(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if b"Action=DescribeInstances" in body:
            describes.append("layer")
        return forward(method, path, headers, body)

    monkeypatch.setattr(cloud.proxy, "upstream", upstream)
    ec2.client.meta.events.register(
        "before-call.ec2.DescribeInstances", lambda **_: describes.append("emulator")
    )
    launched = cloud.ec2.run_instances(
        ImageId=cloud.ami, MinCount=3, MaxCount=3, SubnetId=cloud.subnet, InstanceType="t3.micro"
    )
    ids = [i["InstanceId"] for i in launched["Instances"]]
    fleet.reconcile()
    assert not set(ids) & set(fleet.machines), "booted while AWS shows it pending"
    _wait(lambda: (fleet.reconcile(), set(ids) <= set(fleet.machines))[1], "never booted")
    for _ in range(10):
        fleet.reconcile()
    assert describes == []
    cloud.ec2.stop_instances(InstanceIds=[ids[0]])
    fleet.reconcile()  # shows `stopping` (moto: already stopped)
    assert ids[0] not in fleet.machines
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    for reservation in ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].reservations.values():
        reservation.instances = [i for i in reservation.instances if i.id != ids[1]]
    fleet.reconcile()
    assert ids[1] not in fleet.machines, "gone from the backend, still running"
    assert ids[2] in fleet.machines
    assert {i: boots[i] for i in ids} == dict.fromkeys(ids, 1)
    assert describes == []
    cloud.ec2.terminate_instances(InstanceIds=[ids[0], ids[2]])
    fleet.stop()


def test_a_machine_missing_from_three_complete_listings_in_a_row_halts(
    boots: Counter[str], tmp_path: Path
) -> None:
    """L8 through the API: one missing listing may be a partial one; three are not."""
    ec2 = ListedEc2()
    ec2.states = {"i-0000000000000000e": "running", "i-0000000000000000f": "running"}
    fleet = emulator.FleetEmulator(ec2, tmp_path, 2222, publish_console=False)  # type: ignore[arg-type]
    fleet.reconcile()
    ec2.states = {"i-0000000000000000e": "running"}
    for _ in range(fleet_states.MISSING_LISTINGS - 1):
        fleet.reconcile()
    ec2.states = {"i-0000000000000000e": "running", "i-0000000000000000f": "running"}
    fleet.reconcile()  # back: the count starts again
    ec2.states = {"i-0000000000000000e": "running"}
    for _ in range(fleet_states.MISSING_LISTINGS - 1):
        fleet.reconcile()
    assert sorted(fleet.machines) == ["i-0000000000000000e", "i-0000000000000000f"]
    fleet.reconcile()
    assert sorted(fleet.machines) == ["i-0000000000000000e"]
    fleet.stop()


def test_a_machine_halted_as_gone_boots_again_only_after_a_new_start(
    boots: Counter[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 7 L2: an instance listed again after it counted as gone is not booted a
    second time unasked; a start (a new boot count) boots it."""
    counts = {"i-00000000000000010": 1}
    monkeypatch.setattr(motoserver, "boot_count", lambda instance_id: counts.get(instance_id, 0))
    ec2 = ListedEc2()
    ec2.states = {"i-00000000000000010": "running"}
    fleet = emulator.FleetEmulator(ec2, tmp_path, 2222, publish_console=False)  # type: ignore[arg-type]
    fleet.reconcile()
    ec2.states = {}
    for _ in range(fleet_states.MISSING_LISTINGS):
        fleet.reconcile()
    assert fleet.machines == {}
    ec2.states = {"i-00000000000000010": "running"}
    fleet.reconcile()
    assert fleet.machines == {} and boots["i-00000000000000010"] == 1
    counts["i-00000000000000010"] = 2  # started again through EC2
    fleet.reconcile()
    assert list(fleet.machines) == ["i-00000000000000010"]
    assert boots["i-00000000000000010"] == 2
    fleet.stop()


def test_without_the_layer_a_launch_in_flight_shows_its_instances_pending(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 7 M2: moto lists a launch's instances `running` before it has tagged them
    and given them their profile; read in-process without the like-AWS layer, they
    show `pending` until the RunInstances is answered."""
    from moto.ec2.models.instances import InstanceBackend

    made, release = threading.Event(), threading.Event()
    original = InstanceBackend.run_instances

    def held(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = original(self, *args, **kwargs)
        made.set()
        release.wait(10)
        return reservation

    monkeypatch.setattr(InstanceBackend, "run_instances", held)
    source = fleet_states.moto_source("us-east-1")  # no layer
    before = set(source().instances)
    launch = threading.Thread(
        target=lambda: cloud.ec2.run_instances(
            ImageId=cloud.ami, MinCount=1, MaxCount=1, SubnetId=cloud.subnet
        )
    )
    launch.start()
    try:
        assert made.wait(10)
        during = {i: x.state for i, x in source().instances.items() if i not in before}
    finally:
        release.set()
        launch.join(10)
    assert list(during.values()) == ["pending"]
    after = source().instances
    assert [after[i].state for i in during] == ["running"]


def test_an_instance_moto_cannot_describe_does_not_make_others_gone(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.ec2.run_instances(ImageId=cloud.ami, MinCount=2, MaxCount=2, SubnetId=cloud.subnet)
    source = fleet_states.moto_source("us-east-1")
    ids = sorted(source().instances)
    real = fleet_states._instance

    def odd(moto_instance: Any, visible: Any) -> Instance:
        if moto_instance.id == ids[0]:
            raise KeyError(0)
        return real(moto_instance, visible)

    monkeypatch.setattr(fleet_states, "_instance", odd)
    listing = source()
    assert ids[0] not in listing.instances and ids[1] in listing.instances
    assert not listing.definitive  # so Absences waits, as for a partial API listing
