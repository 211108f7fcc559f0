"""worker_instance_type_fallbacks against the region: a type the region does not have,
or one that cannot hibernate when workers do, stops the hub at its start with one line;
and the spawner's own check before a launch is redone when hibernation changes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from traitlets import TraitError
from traitlets.config import Config

from cloudjhub.hub.apply import apply
from cloudjhub.local.demo import hub_settings as demo_settings
from cloudjhub.local.demo_secrets import make_passwords
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.spawner_options import SpawnError
from tests.unit.test_ec2_queue import configured, spawner_for  # noqa: F401 (fixtures)
from tests.unit.test_spawner_traits import SERVER_CONFIG


def hub_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **traits: Any) -> None:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)
    make_passwords(tmp_path)
    here = {**SERVER_CONFIG, "AWS_ENDPOINT_URL": None, "REGION": "us-east-1"}  # moto's
    (tmp_path / "server_config.json").write_text(json.dumps(here))
    settings = demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, traits)
    apply(Config(), settings, {})


@pytest.mark.parametrize(
    ("traits", "line"),
    [
        (
            {"worker_instance_type_fallbacks": ["t3.large", "x9.nonsense"]},
            "c.InstanceSpawner.worker_instance_type_fallbacks: 'x9.nonsense' is not an "
            "instance type in region us-east-1",
        ),
        (
            {"worker_instance_type_fallbacks": ["t3.large", "g4dn.xlarge"], "hibernate": True},
            "c.InstanceSpawner.worker_instance_type_fallbacks: 'g4dn.xlarge' cannot hibernate",
        ),
    ],
    ids=["unknown", "cannot-hibernate"],
)
def test_the_hub_refuses_to_start_with_an_unusable_fallback_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: None, traits: Any, line: str
) -> None:
    with pytest.raises(TraitError) as caught:
        hub_start(tmp_path, monkeypatch, **traits)
    said = str(caught.value)
    assert said.startswith(line) and "\n" not in said


def test_the_hub_starts_with_usable_fallback_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: None
) -> None:
    hub_start(tmp_path, monkeypatch, worker_instance_type_fallbacks=["t3.large"], hibernate=True)


def test_the_spawners_check_is_redone_when_hibernation_changes(
    calls: Any,
    configured: Callable[..., InstanceSpawner],  # noqa: F811
) -> None:
    """A spawner without hibernation checked the list first; one with hibernation (a
    profile's) must not reuse that answer for a type that cannot hibernate."""
    plain = configured("alice", worker_instance_type_fallbacks=["g4dn.xlarge"])
    asyncio.run(plain.start())
    sleepy = configured("bob", worker_instance_type_fallbacks=["g4dn.xlarge"], hibernate=True)

    with pytest.raises(SpawnError) as caught:
        asyncio.run(sleepy.start())

    assert "worker_instance_type_fallbacks: 'g4dn.xlarge' cannot hibernate" in str(caught.value)
    assert calls["RunInstances"] == 1  # alice's only
