"""InstanceSpawner's options default from server_config.json, each from its own key.

traitlets ignores a default for a trait name that does not exist, so a typo in
the spawner would go unnoticed until that option mattered; this pins the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub
from traitlets import TraitType

from cloudjhub.spawner import InstanceSpawner
from cloudjhub.spawner_ec2 import Ec2Calls
from cloudjhub.spawner_options import InstanceSpawnerOptions, from_config

# Every value differs from the model's default, so a trait that ignored the file shows.
SERVER_CONFIG: dict[str, Any] = {
    "CLUSTER_NAME": "traits",
    "REGION": "eu-west-3",
    "WORKER_AMI": "ami-0123abcd",
    "SUBNET_ID": "subnet-0abc12",
    "SUBNET_IDS": ["subnet-0abc12", "subnet-0def34"],
    "WORKER_SECURITY_GROUPS": ["sg-1", "sg-2"],
    "KEY_NAME": "traits-key",
    "HIBERNATE": True,
    "WORKER_INSTANCE_TYPE": "m5.large",
    "WORKER_EBS_SIZE": 33,
    "USER_HOME_EBS_SIZE": 7,
    "JUPYTER_NOTEBOOK_TIMEOUT": 1234,
    "WORKER_USERNAME": "worker-user",
    "SSH_KEY_FILE": "/etc/keys/worker",
    "SSH_PORT": 2200,
    "SSH_HOST_KEY_SOURCE": "known_hosts",
    "SSH_KNOWN_HOSTS": "/etc/keys/known_hosts",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}

TRAIT_KEYS = {
    "cluster_name": "CLUSTER_NAME",
    "region": "REGION",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "worker_ami": "WORKER_AMI",
    "subnet_id": "SUBNET_ID",
    "subnet_ids": "SUBNET_IDS",
    "security_group_ids": "WORKER_SECURITY_GROUPS",
    "key_name": "KEY_NAME",
    "worker_instance_type": "WORKER_INSTANCE_TYPE",
    "worker_ebs_size": "WORKER_EBS_SIZE",
    "user_home_ebs_size": "USER_HOME_EBS_SIZE",
    "idle_timeout": "JUPYTER_NOTEBOOK_TIMEOUT",
    "hibernate": "HIBERNATE",
    "ssh_username": "WORKER_USERNAME",
    "ssh_key_file": "SSH_KEY_FILE",
    "ssh_port": "SSH_PORT",
    "ssh_host_key_source": "SSH_HOST_KEY_SOURCE",
    "ssh_known_hosts": "SSH_KNOWN_HOSTS",
}


def spawner(tmp_path: Path, **traits: Any) -> InstanceSpawner:
    path = tmp_path / "server_config.json"
    path.write_text(json.dumps(SERVER_CONFIG))
    user = SimpleNamespace(name="ann", escaped_name="ann", url="/user/ann/")
    traits.setdefault("kept_logs_dir", str(tmp_path / "kept-logs"))
    return InstanceSpawner(
        server_config_file=str(path), user=user, hub=Hub(), oauth_client_id="c", **traits
    )


def test_each_trait_defaults_to_its_key(tmp_path: Path) -> None:
    made = spawner(tmp_path)
    assert {trait: getattr(made, trait) for trait in TRAIT_KEYS} == {
        trait: SERVER_CONFIG[key] for trait, key in TRAIT_KEYS.items()
    }


def test_a_configured_trait_wins_over_the_file(tmp_path: Path) -> None:
    made = spawner(tmp_path, worker_ebs_size=64, ssh_port=22)
    assert (made.worker_ebs_size, made.ssh_port) == (64, 22)
    assert made.region == "eu-west-3"


def test_only_real_traits_get_defaults_from_the_file() -> None:
    # The @default's of the spawner and of its options mixin (each class's own).
    generators = {
        **InstanceSpawnerOptions._trait_default_generators,
        **Ec2Calls._trait_default_generators,
        **InstanceSpawner._trait_default_generators,
    }
    traits = InstanceSpawner.class_traits()
    assert set(TRAIT_KEYS) <= set(generators)
    for name in generators:
        assert isinstance(traits.get(name), TraitType), name
    for name in TRAIT_KEYS:
        assert traits[name].metadata.get("config") and traits[name].help, name


def test_a_key_the_file_cannot_have_fails_at_once() -> None:
    with pytest.raises(AttributeError, match="WORKER_EBS_SIZ "):
        from_config("worker_ebs_size", "WORKER_EBS_SIZ")
