"""Spot workers' known weaknesses, each shown failing first: the first stop after a
hub restart (nothing cached about the instance) ends a spot worker instead of calling
StopInstances; a spot pick on a stopped on-demand instance is explained and needs
`replace_instance`; JupyterHub's reuse of a pick the admin removed falls back to
the default profile with a notice."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tornado import web

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.spawner_options import SpawnError
from tests.helpers import ApiCalls
from tests.unit.test_profiles import PROFILES, profiled_spawner, start_options, stopped
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


def test_a_spot_pick_on_a_stopped_on_demand_instance_needs_a_confirmed_replacement(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
) -> None:
    """AWS cannot make an on-demand instance spot: like another image, the spawn page
    says so, and only a confirmed replacement (the home volume moves) gives spot."""
    instance = stopped(ec2, make_worker)
    assert not instance.spot
    spawner = profiled_spawner(
        tmp_path, monkeypatch, ec2, profile_list=PROFILES, worker_ami=instance.image_id
    )
    spawner._emit = lambda percent, message: None  # type: ignore[method-assign]
    start_options(spawner, {"profile": "spot"})
    with pytest.raises(SpawnError) as refused:
        asyncio.run(spawner.fit_to_profile(instance))
    message = str(refused.value)
    assert "has another market (on-demand, the profile's is spot) than profile 'spot'" in message
    assert "AWS cannot change in place" in message and "replace_instance" in message
    assert ec2.describe([instance.id])[0].state == "stopped"  # untouched

    start_options(spawner, {"profile": "spot", "replace_instance": True})

    async def terminated(instance_id: str, states: tuple[str, ...]) -> Instance:
        return ec2.describe([instance_id])[0]

    spawner._wait_for = terminated  # type: ignore[method-assign]
    assert asyncio.run(spawner.fit_to_profile(instance)) is True
    assert ec2.describe([instance.id])[0].gone
    # An on-demand pick keeps the on-demand instance.
    start_options(spawner, {"profile": "small-t3-micro"})
    assert spawner.replacement_needed(instance) == ""


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
