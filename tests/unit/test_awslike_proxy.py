"""The AWS behaviour layer as a proxy in front of a real moto server (in this process),
spoken to with boto3 as the hub and launcher speak to it."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests
from click.testing import CliRunner

from cloudjhub.aws.client import RETRY_CONFIG, CloudError
from cloudjhub.aws.hub import HubEc2, WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.commands import destroy
from cloudjhub.launch.image import build_worker_image
from cloudjhub.local import motoserver
from cloudjhub.local.awslike import ipreuse
from cloudjhub.local.awslike.proxy import CONTROL_PATH, AwsLikeProxy
from cloudjhub.local.awslike.settings import Behaviour
from cloudjhub.tags import CLUSTER_TAG, POOL_TAG, USER_ID_TAG, Role, tags_for
from tests.unit.conftest import SshKey

SCALE = 0.02  # pending 0.6 s, stopping 0.8 s, shutting-down 0.6 s


@dataclass
class Setup:
    proxy: AwsLikeProxy
    ec2: Any  # a boto3 client through the layer
    ami: str
    subnet: str


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {**motoserver.LOCAL_CREDENTIALS, **motoserver.VALIDATION_FLAGS}.items():
            mp.setenv(var, value)
        moto = motoserver.LocalEc2()
        upstream = moto.start()
        for var, value in moto.credentials.items():
            mp.setenv(var, value)
        proxy = AwsLikeProxy(upstream, "us-east-1", Behaviour(time_scale=SCALE))
        proxy.start()
        ipreuse.install(proxy.layer.behaviour.shutting_down)
        try:
            # A session of its own: boto3's default one keeps the first credentials it
            # resolved, which may be another test's moto user, gone by now.
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
            yield Setup(proxy, ec2, ami, subnet)
        finally:
            ipreuse.uninstall()
            proxy.stop()
            moto.stop()


def _run(s: Setup, **kwargs: Any) -> dict[str, Any]:
    reply = s.ec2.run_instances(
        ImageId=s.ami, MinCount=1, MaxCount=1, SubnetId=s.subnet, InstanceType="t3.medium", **kwargs
    )
    return dict(reply["Instances"][0])


def _state(s: Setup, instance_id: str) -> str:
    found = s.ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}])
    return str(found["Reservations"][0]["Instances"][0]["State"]["Name"])


def _wait(s: Setup, instance_id: str, state: str) -> None:
    deadline = time.monotonic() + 10
    while _state(s, instance_id) != state:
        assert time.monotonic() < deadline, f"{instance_id} never became {state}"
        time.sleep(0.05)


def test_a_launch_is_pending_first_and_a_stopping_instance_cannot_start(setup: Setup) -> None:
    instance = _run(setup)
    iid = instance["InstanceId"]
    assert _state(setup, iid) == "pending"
    _wait(setup, iid, "running")
    setup.ec2.stop_instances(InstanceIds=[iid])
    assert _state(setup, iid) == "stopping"
    hub = HubEc2("none", setup.ec2)
    with pytest.raises(CloudError) as err:
        hub._call("start_instances", InstanceIds=[iid])
    assert err.value.code == "IncorrectInstanceState"
    _wait(setup, iid, "stopped")
    setup.ec2.start_instances(InstanceIds=[iid])
    assert _state(setup, iid) == "pending"


def test_a_client_token_returns_the_same_instance(setup: Setup) -> None:
    first = _run(setup, ClientToken="cjh-same")
    again = _run(setup, ClientToken="cjh-same")
    assert again["InstanceId"] == first["InstanceId"]
    assert _run(setup, ClientToken="cjh-other")["InstanceId"] != first["InstanceId"]


def test_one_launch_for_several_users_replayed_gives_each_the_same_one_instance(
    setup: Setup,
) -> None:
    """A shared RunInstances retried with its token (what botocore does after a timeout)
    launches nothing more, and each instance stays tagged to the one user it went to."""
    vpc = setup.ec2.describe_subnets(SubnetIds=[setup.subnet])["Subnets"][0]["VpcId"]
    group = setup.ec2.create_security_group(GroupName="batch-w", Description="w", VpcId=vpc)
    setup.ec2.create_key_pair(KeyName="batch-workers")
    spec = WorkerSpec(
        setup.ami, "t3.medium", setup.subnet, (group["GroupId"],), "batch-workers", 20
    )
    hub = HubEc2("batch", setup.ec2)
    users = [("ann", "1", "", {}), ("bob", "2", "", {}), ("cy", "3", "lab", {})]

    first = hub.launch_for_users(users, spec, "cjb-replayed")
    again = hub.launch_for_users(users, spec, "cjb-replayed")

    assert [i.id for i in again] == [i.id for i in first]
    workers = hub.describe_workers()
    assert len(workers) == 3
    by_user = {w.user: w for w in workers}
    assert [by_user[u].id for u, _, _, _ in users] == [i.id for i in first]
    ids = {user: user_id for user, user_id, _, _ in users}
    assert all(POOL_TAG not in w.tags and w.tags[USER_ID_TAG] == ids[w.user or ""]
               for w in workers)  # fmt: skip
    assert [(w.user, w.server) for w in workers if w.server] == [("cy", "lab")]


def test_private_ips_are_reused_once_terminated(setup: Setup) -> None:
    gone = _run(setup)
    setup.ec2.terminate_instances(InstanceIds=[gone["InstanceId"]])
    assert _state(setup, gone["InstanceId"]) == "shutting-down"
    _wait(setup, gone["InstanceId"], "terminated")
    assert _run(setup)["PrivateIpAddress"] == gone["PrivateIpAddress"]


def test_console_and_hypervisor_as_on_aws(setup: Setup) -> None:
    hub = HubEc2("none", setup.ec2)
    assert hub.hypervisor("t3.medium") == "nitro"
    iid = _run(setup)["InstanceId"]
    setup.proxy.layer.console.write(iid, "cloud-init: host keys")
    assert hub.console_output(iid, "t3.medium") == "cloud-init: host keys"  # Latest
    # Buffered output is posted 30 s (x SCALE) after the boot wrote it.
    assert setup.ec2.get_console_output(InstanceId=iid).get("Output", "") == ""


def test_a_burst_is_throttled_and_botocores_retries_carry_it(setup: Setup) -> None:
    control = setup.proxy.url + CONTROL_PATH
    before = requests.get(control, timeout=5).json()
    before_refused = before["throttled"].get("DescribeKeyPairs", 0)

    def call(_: int) -> int:
        return len(setup.ec2.describe_key_pairs()["KeyPairs"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(180)))
    assert len(results) == 180
    after = requests.get(control, timeout=5).json()
    refused = after["throttled"]["DescribeKeyPairs"] - before_refused
    assert refused > 0
    # Every request is counted, the refused ones (retried by botocore) too.
    calls = after["calls"]["DescribeKeyPairs"] - before["calls"].get("DescribeKeyPairs", 0)
    assert calls == 180 + refused


def test_other_services_pass_through_and_faults_can_be_set_while_running(setup: Setup) -> None:
    # A new session: it reads this module's moto credentials from the environment now.
    iam = boto3.session.Session().client(
        "iam", region_name="us-east-1", endpoint_url=setup.proxy.url
    )
    assert "Roles" in iam.list_roles()
    control = setup.proxy.url + CONTROL_PATH
    assert requests.put(control, json={"faults": {"Nope": 1}}, timeout=5).status_code == 400
    reply = requests.put(control, json={"faults": {"InsufficientInstanceCapacity": 1}}, timeout=5)
    assert reply.json()["faults"] == {"InsufficientInstanceCapacity": 1.0}
    try:
        with pytest.raises(CloudError) as err:
            HubEc2("none", setup.ec2)._call("run_instances", {"instance_type": "t3.medium"},
                ImageId=setup.ami, MinCount=1, MaxCount=1, SubnetId=setup.subnet,
                InstanceType="t3.medium")  # fmt: skip
        assert err.value.code == "InsufficientInstanceCapacity"
        assert "no spare t3.medium capacity" in str(err.value)
        # Not retried: the hub tries the next type or subnet at once (AWS's advice).
        injected = requests.get(control, timeout=5).json()["injected"]
        assert injected["InsufficientInstanceCapacity"] == 1
    finally:
        requests.put(control, json={"faults": {}}, timeout=5)


def test_the_internal_port_is_never_throttled(setup: Setup) -> None:
    internal = LocalCloudEc2.connect("none", "us-east-1", setup.proxy.internal_url)
    layer = setup.proxy.layer
    before = dict(layer.throttle.throttled)
    for _ in range(105):  # more than a full non-mutating bucket
        internal.public_keys()
    assert layer.throttle.throttled == before


def test_destroy_outlasts_invalid_snapshot_in_use_after_deregistering(
    setup: Setup, ssh_key: SshKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--fault InvalidSnapshot.InUse`: DeleteSnapshot fails while the image's
    deregistration is settling (20 s x SCALE); destroy retries until it is gone."""
    ec2 = LocalCloudEc2("snapfault", setup.ec2)
    ec2.import_key_pair("snapfault-admin", ssh_key.public, {CLUSTER_TAG: "snapfault"})
    image = build_worker_image(
        ec2, setup.ami, "t3.micro", setup.subnet, [], "snapfault-admin", progress=lambda _m: None,
        poll=0.05,
    )  # fmt: skip
    snapshots = ec2.tag_image_snapshots(image, tags_for("snapfault", Role.IMAGE))
    assert snapshots
    control = setup.proxy.url + CONTROL_PATH
    before = requests.get(control, timeout=5).json()["injected"].get("InvalidSnapshot.InUse", 0)
    monkeypatch.setattr(destroy, "POLL_SECONDS", 0.1)
    requests.put(control, json={"faults": {"InvalidSnapshot.InUse": 1}}, timeout=5)
    try:
        result = CliRunner().invoke(
            main, ["destroy", "snapfault", "--yes", "--aws-endpoint", setup.proxy.url]
        )
    finally:
        requests.put(control, json={"faults": {}}, timeout=5)

    assert result.exit_code == 0, result.output
    injected = requests.get(control, timeout=5).json()["injected"]["InvalidSnapshot.InUse"]
    assert injected > before
    assert "still in use" in result.output
    left = setup.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not {s["SnapshotId"] for s in left} & set(snapshots)


def test_a_resize_during_the_last_modification_is_refused_in_one_line(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS takes a volume's next ModifyVolume only once the last one is completed;
    `resize-home` meanwhile says so and changes nothing."""
    modifications = setup.proxy.layer.modifications
    monkeypatch.setattr(modifications, "seconds", 60.0)  # longer than two CLI runs
    home = LocalCloudEc2("resizing", setup.ec2).create_home_volume("alice", 2, "us-east-1a")

    def resize(size: str) -> Any:
        argv = ["resize-home", "resizing", "alice", size, "--aws-endpoint", setup.proxy.url]
        return CliRunner().invoke(main, argv)

    def size() -> int:
        return int(setup.ec2.describe_volumes(VolumeIds=[home])["Volumes"][0]["Size"])

    first = resize("3")
    assert first.exit_code == 0, first.output
    second = resize("4")
    assert second.exit_code == 1, second.output
    lines = [line for line in second.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "still being modified" in lines[0], second.output
    assert size() == 3
    monkeypatch.setattr(modifications, "clock", lambda: time.monotonic() + 60)  # completed
    third = resize("4")
    assert third.exit_code == 0, third.output
    assert size() == 4


def test_a_second_volume_at_a_used_device_name_is_refused(setup: Setup) -> None:
    """AWS refuses an attachment point already in use on the instance (moto does not)."""
    instance = _run(setup)["InstanceId"]
    _wait(setup, instance, "running")
    volumes = [
        setup.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"] for _ in range(2)
    ]
    setup.ec2.attach_volume(VolumeId=volumes[0], InstanceId=instance, Device="/dev/sdg")
    with pytest.raises(setup.ec2.exceptions.ClientError, match="already in use"):
        setup.ec2.attach_volume(VolumeId=volumes[1], InstanceId=instance, Device="/dev/sdg")
    setup.ec2.attach_volume(VolumeId=volumes[1], InstanceId=instance, Device="/dev/sdh")


def test_more_than_200_filter_values_are_refused_and_the_hubs_lookups_stay_under(
    setup: Setup,
) -> None:
    """AWS answers a call of over 200 filter values (over all its filters) with
    FilterLimitExceeded; moto answers it. The hub's batched user lookup splits 300
    names into calls that fit, with its cluster and role filters counted."""
    names = [f"student{n:03d}" for n in range(300)]
    with pytest.raises(setup.ec2.exceptions.ClientError, match="FilterLimitExceeded"):
        setup.ec2.describe_instances(
            Filters=[
                {"Name": "tag:cloudjhub:role", "Values": ["worker"]},
                {"Name": "tag:cloudjhub:user", "Values": names[:200]},
            ]
        )
    hub = HubEc2("lookups", setup.ec2)
    lookups = hub.user_lookups(names)
    assert sorted(u for group in lookups for u in group) == names and len(lookups) == 2
    found = {u: v for group in lookups for u, v in hub.users_workers(group).items()}
    assert found == {u: [] for u in names}


def test_calls_and_refusals_are_counted_by_the_caller_the_user_agent_names(
    setup: Setup,
) -> None:
    """Two of our processes' clients (aws/caller.py) and a plain boto3 one, counted apart;
    the refusals of a burst go to the caller that made it."""
    control = setup.proxy.url + CONTROL_PATH
    hub = LocalCloudEc2.connect("none", "us-east-1", setup.proxy.url, "hub")
    keeper = LocalCloudEc2.connect("none", "us-east-1", setup.proxy.url, "pool-keeper")
    action = "DescribeAvailabilityZones"
    before = requests.get(control, timeout=5).json()
    for _ in range(3):
        hub.client.describe_availability_zones()
    setup.ec2.describe_availability_zones()  # no cloudjhub/ caller: "other"

    def burst(_: int) -> None:
        keeper.client.describe_availability_zones()

    def refused_so_far() -> int:
        now = requests.get(control, timeout=5).json()["throttled_by_caller"]
        return int(now.get("pool-keeper", {}).get(action, 0))

    # More than the bucket holds (100, 20 a second), in rounds until one is refused:
    # how many rounds that takes depends on how fast this machine is, not the test.
    made = 0
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while made < 2000 and not refused_so_far():
            list(pool.map(burst, range(140)))
            made += 140
    after = requests.get(control, timeout=5).json()

    def delta(key: str, caller: str) -> int:
        now = after[key].get(caller, {}).get(action, 0)
        return int(now - before.get(key, {}).get(caller, {}).get(action, 0))

    refused = delta("throttled_by_caller", "pool-keeper")
    assert refused > 0
    assert delta("calls_by_caller", "pool-keeper") == made + refused  # retries counted too
    assert delta("calls_by_caller", "hub") == 3
    assert delta("calls_by_caller", "other") == 1
    assert delta("throttled_by_caller", "hub") == delta("throttled_by_caller", "other") == 0
    # The totals scripts read are kept.
    total = after["calls"][action] - before["calls"].get(action, 0)
    assert total == 3 + 1 + made + refused
    assert after["throttled"][action] - before["throttled"].get(action, 0) == refused
