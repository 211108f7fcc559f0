"""Hibernation: which types can, the root volume rule, config and trait validation,
the hibernating launch, and moto learning which stops asked for hibernation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub
from traitlets import TraitError

from cloudjhub import hibernation
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.config import ConfigError, InstanceConfig, load_instance_config, load_server_config
from cloudjhub.local import motoserver
from cloudjhub.spawner import InstanceSpawner, SpawnError

SERVER_CONFIG = {
    "CLUSTER_NAME": "alpha",
    "REGION": "us-east-1",
    "WORKER_AMI": "ami-0abc",
    "SUBNET_ID": "subnet-0abc",
    "WORKER_SECURITY_GROUPS": ["sg-1"],
    "KEY_NAME": "key",
}


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def spawner(config: Path, **traits: Any) -> InstanceSpawner:
    user = SimpleNamespace(name="ann", escaped_name="ann", url="/user/ann/")
    return InstanceSpawner(
        server_config_file=str(config), user=user, hub=Hub(), oauth_client_id="c", **traits
    )


@pytest.mark.parametrize(
    ("instance_type", "ram"),
    [("t3.medium", 4), ("t2.nano", 0.5), ("m5.8xlarge", 128), ("r4.large", 15.25)],
)
def test_capable_types_and_their_ram(instance_type: str, ram: float) -> None:
    assert hibernation.ram_gib(instance_type) == ram
    assert hibernation.unsupported_reason(instance_type) is None


@pytest.mark.parametrize("instance_type", ["c6i.large", "m5.metal", "r5.8xlarge", "t3", "x"])
def test_other_types_are_refused_with_a_reason(instance_type: str) -> None:
    assert hibernation.ram_gib(instance_type) is None
    reason = hibernation.unsupported_reason(instance_type)
    assert reason and instance_type in reason and "t3a" in reason


def test_root_volume_holds_the_ram_on_top_of_the_disk() -> None:
    assert hibernation.root_volume_gib("t3.medium", 8) == 12
    assert hibernation.root_volume_gib("r4.large", 20) == 36  # 15.25 GiB rounds up
    with pytest.raises(ValueError, match=r"c6i\.large"):
        hibernation.root_volume_gib("c6i.large", 8)


def test_server_config_refuses_hibernate_with_an_incapable_type(tmp_path: Path) -> None:
    bad = {**SERVER_CONFIG, "HIBERNATE": True, "WORKER_INSTANCE_TYPE": "c6i.large"}
    path = write(tmp_path / "server_config.json", bad)
    with pytest.raises(ConfigError, match=r"server_config\.json: field WORKER_INSTANCE_TYPE: "):
        load_server_config(path)
    fine = write(tmp_path / "ok.json", {**bad, "HIBERNATE": False})
    assert load_server_config(fine).WORKER_INSTANCE_TYPE == "c6i.large"
    assert load_server_config(write(tmp_path / "d.json", SERVER_CONFIG)).HIBERNATE is False


def test_instance_config_refuses_it_too(tmp_path: Path) -> None:
    path = write(
        tmp_path / "instance_config.json", {"HIBERNATE": True, "WORKER_INSTANCE_TYPE": "a1.large"}
    )
    with pytest.raises(
        ConfigError, match=r"field WORKER_INSTANCE_TYPE: 'a1\.large' cannot hibernate"
    ):
        load_instance_config(path)
    assert InstanceConfig(HIBERNATE=True).WORKER_INSTANCE_TYPE == "t3.medium"


def test_spawner_hibernates_from_server_config_with_a_bigger_root(tmp_path: Path) -> None:
    config = {**SERVER_CONFIG, "HIBERNATE": True, "WORKER_INSTANCE_TYPE": "t3.large"}
    s = spawner(write(tmp_path / "sc.json", {**config, "WORKER_EBS_SIZE": 20}))
    assert s.hibernate is True
    spec = s._spec()
    assert (spec.hibernate, spec.ebs_size) == (True, 28)
    plain = spawner(write(tmp_path / "plain.json", {**SERVER_CONFIG, "WORKER_EBS_SIZE": 20}))
    assert plain.hibernate is False
    assert (plain._spec().hibernate, plain._spec().ebs_size) == (False, 20)


def test_spawner_traits_are_checked_against_each_other(tmp_path: Path) -> None:
    config = write(tmp_path / "sc.json", SERVER_CONFIG)
    with pytest.raises(TraitError, match="WORKER_INSTANCE_TYPE"):
        spawner(config, hibernate=True, worker_instance_type="c6i.large")
    s = spawner(config, worker_instance_type="c6i.large")
    with pytest.raises(TraitError, match="worker_instance_type"):
        s.hibernate = True
    s = spawner(config, hibernate=True)
    with pytest.raises(TraitError, match="cannot hibernate"):
        s.worker_instance_type = "m6i.large"


def test_a_type_from_the_file_is_checked_before_launch(tmp_path: Path) -> None:
    # HIBERNATE from a trait, the type from server_config.json: caught before any launch.
    config = write(tmp_path / "sc.json", {**SERVER_CONFIG, "WORKER_INSTANCE_TYPE": "c6i.large"})
    s = spawner(config, hibernate=True)
    with pytest.raises(SpawnError, match=r"WORKER_INSTANCE_TYPE 'c6i\.large' cannot hibernate"):
        s._spec()


def test_self_stop_grace_defaults_to_half_the_timeout_but_at_least_300(tmp_path: Path) -> None:
    config = write(tmp_path / "sc.json", SERVER_CONFIG)
    assert spawner(config, idle_timeout=3600).self_stop_grace == 1800
    assert spawner(config, idle_timeout=60).self_stop_grace == 300
    assert spawner(config, idle_timeout=60, self_stop_grace=5).self_stop_grace == 5


def test_hibernating_launch_and_stop(ec2: LocalCloudEc2, spec: WorkerSpec) -> None:
    motoserver._patch_stop_instances()
    hibernating = replace(
        spec, hibernate=True, ebs_size=hibernation.root_volume_gib("t3.medium", 8)
    )
    inst = ec2.launch_worker("ann", hibernating, "test-hibernate")
    data = ec2.client.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
    assert data["HibernationOptions"] == {"Configured": True}
    (volume,) = ec2.client.describe_volumes(VolumeIds=list(inst.volumes))["Volumes"]
    assert (volume["Size"], volume["Encrypted"]) == (12, True)

    ec2.stop(inst.id, hibernate=True)
    assert motoserver.stopped_with_hibernate(inst.id)
    ec2.start(inst.id)
    ec2.stop(inst.id)
    assert not motoserver.stopped_with_hibernate(inst.id)
