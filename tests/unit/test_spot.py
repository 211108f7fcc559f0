"""Spot workers' known weaknesses, each shown failing first: the first stop after a
hub restart (nothing cached about the instance) ends a spot worker instead of calling
StopInstances; a spot pick on a stopped on-demand instance (a fallback) resumes it,
told so, and only `replace_instance` replaces it; an EC2 error while telling spot
fails no stop; JupyterHub's reuse of a pick the admin removed falls back to the
default profile with a notice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tornado import web

from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.spawner import InstanceSpawner
from tests.helpers import ApiCalls
from tests.unit.test_ec2_queue import configured, spawner_for  # noqa: F401 (fixtures)
from tests.unit.test_profiles import PROFILES, profiled_spawner, start_options, stopped
from tests.unit.test_spawner_traits import SERVER_CONFIG
from tests.unit.test_spawner_traits import spawner as make_spawner


def test_the_first_stop_after_a_hub_restart_ends_a_spot_worker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
    calls: ApiCalls,
) -> None:
    spot = ec2.launch_worker("ann", dataclasses.replace(spec, market="spot"), "t-spot-restart")
    # A new hub: its fleet cache has never seen ann's instance.
    spawner = profiled_spawner(tmp_path, monkeypatch, ec2, profile_list=PROFILES)
    start_options(spawner, {"profile": "spot"})
    assert spawner.fleet.get(spot.id) is None
    calls.clear()

    assert asyncio.run(spawner.end_if_spot(spot.id)) is True

    assert calls["StopInstances"] == 0 and calls["TerminateInstances"] == 1
    assert ec2.describe([spot.id])[0].state in ("shutting-down", "terminated")


def test_a_spot_pick_on_a_stopped_on_demand_instance_resumes_it_unless_replacing_is_confirmed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
) -> None:
    """AWS cannot make an on-demand instance (a spot request's fallback, mostly) spot:
    the user gets their instance back, told so; only a confirmed replacement (the home
    volume moves) tries spot again."""
    instance = stopped(ec2, make_worker)
    assert not instance.spot
    spawner = profiled_spawner(
        tmp_path, monkeypatch, ec2, profile_list=PROFILES, worker_ami=instance.image_id
    )
    notes: list[str] = []
    spawner._emit = lambda percent, message: notes.append(message)  # type: ignore[method-assign]
    start_options(spawner, {"profile": "spot"})
    assert spawner.replacement_needed(instance) == ""
    assert asyncio.run(spawner.fit_to_profile(instance)) is False  # resumed
    assert ec2.describe([instance.id])[0].state == "stopped"  # untouched
    assert f"Your instance {instance.id} is on-demand" in notes[0]
    assert "'Replace my instance'" in notes[0]
    form = asyncio.run(spawner.get_options_form())  # and on the next form
    assert f"Your instance {instance.id} is on-demand" in form

    start_options(spawner, {"profile": "spot", "replace_instance": True})

    async def terminated(instance_id: str, states: tuple[str, ...]) -> Instance:
        return ec2.describe([instance_id])[0]

    spawner._wait_for = terminated  # type: ignore[method-assign]
    assert asyncio.run(spawner.fit_to_profile(instance)) is True
    assert ec2.describe([instance.id])[0].gone


def test_a_spot_fallback_is_stopped_and_started_again_with_its_home(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    configured: Callable[..., InstanceSpawner],  # noqa: F811 - the fixture
) -> None:
    """Fallback -> stop -> start: the on-demand fallback is stopped (not ended) and the
    kept spot pick resumes it, the same instance with the same home volume."""
    real = ec2.launch_worker

    def no_spot_capacity(user: str, spec: WorkerSpec, *args: Any, **kwargs: Any) -> Instance:
        if spec.market == "spot":
            raise CloudError("no spot capacity", "InsufficientInstanceCapacity")
        return real(user, spec, *args, **kwargs)

    monkeypatch.setattr(ec2, "launch_worker", no_spot_capacity)
    config = tmp_path / "server_config.json"
    config.write_text(json.dumps(SERVER_CONFIG))
    ann = configured(
        "ann", server_config_file=str(config), profile_list=PROFILES, user_home_ebs_size=1
    )
    notes: list[str] = []
    monkeypatch.setattr(ann, "_emit", lambda percent, message: notes.append(message))
    start_options(ann, {"profile": "spot"})
    asyncio.run(ann.start())
    first, home = ann.instance_id, ann.home_volume_id
    assert first and home and not ec2.describe([first])[0].spot
    assert any("launching an on-demand one instead" in n for n in notes)

    asyncio.run(ann.stop())
    assert ec2.describe([first])[0].state == "stopped"

    start_options(ann, {})  # the kept pick: spot
    assert ann.profile_slug == "spot" and ann.market == "spot"
    asyncio.run(ann.start())
    assert (ann.instance_id, ann.home_volume_id) == (first, home)
    assert ec2.describe([first])[0].state == "running"
    assert any(f"Your instance {first} is on-demand" in n for n in notes)


def test_a_stop_goes_on_when_ec2_cannot_say_whether_the_worker_is_spot(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
    calls: ApiCalls,
) -> None:
    worker = make_worker("ann")
    spawner = profiled_spawner(tmp_path, monkeypatch, ec2, profile_list=PROFILES)
    assert spawner.fleet.get(worker.id) is None  # a hub restarted since the launch

    def unreachable(ids: list[str]) -> list[Instance]:
        raise CloudError("EC2 is unreachable", "RequestLimitExceeded")

    monkeypatch.setattr(ec2, "describe", unreachable)
    calls.clear()
    assert asyncio.run(spawner.end_if_spot(worker.id)) is False
    assert calls["TerminateInstances"] == 0


def request(body: bytes = b"", query: dict[str, list[bytes]] | None = None) -> Any:
    """What JupyterHub hands the spawner as `handler` during a start."""
    return SimpleNamespace(request=SimpleNamespace(body=body, query_arguments=query or {}))


def test_jupyterhubs_reuse_of_a_removed_profile_falls_back_to_the_default_with_a_notice(
    tmp_path: Path,
) -> None:
    """JupyterHub passes the last user_options from its database on a start that sends
    none (User.spawn); the admin removed that profile since."""
    spawner = make_spawner(tmp_path, profile_list=PROFILES)
    kept = {"profile": "retired"}
    spawner.orm_spawner = SimpleNamespace(user_options=kept, server=None)
    spawner.handler = request()  # a REST call without a body
    start_options(spawner, kept)
    assert spawner.profile_slug == "small-t3-micro"
    assert spawner.profile_notice.startswith("Your last pick is no longer offered")
    assert "'small-t3-micro'" in spawner.profile_notice
    assert "Your last pick is no longer offered" in asyncio.run(spawner.get_options_form())

    # Sent in this request (a REST body, a form, a link's query): the user's to fix.
    for sent in (request(b'{"profile": "retired"}'), request(query={"profile": [b"retired"]})):
        spawner.handler = sent
        with pytest.raises(web.HTTPError) as refused:
            start_options(spawner, kept)
        assert refused.value.status_code == 400
    # the next good start says nothing more
    spawner.handler = request(b'{"profile": "large"}')
    start_options(spawner, {"profile": "large"})
    assert spawner.profile_notice == ""
