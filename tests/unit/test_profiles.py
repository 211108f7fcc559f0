"""profile_list: kubespawner's shape, checked at load; user_options checked against it;
overrides recomputed from the configured traits on every start."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tornado import web
from traitlets import TraitError
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from cloudjhub import profile_form, profile_types
from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.hub.apply import apply
from cloudjhub.hub.settings import SETTINGS_ENV, write_settings
from cloudjhub.launch.manager_setup import SetupRequest
from cloudjhub.launch.manager_setup import hub_settings as manager_settings
from cloudjhub.local.demo import DemoStack
from cloudjhub.local.demo import hub_settings as demo_settings
from cloudjhub.local.demo_secrets import make_passwords
from cloudjhub.profiles import ProfileError, from_form, parse, select
from cloudjhub.spawner import InstanceSpawner
from cloudjhub.spawner_options import SpawnError
from tests.helpers import ApiCalls
from tests.unit.test_spawner_traits import SERVER_CONFIG
from tests.unit.test_spawner_traits import spawner as make_spawner

# Carried over from kubespawner's documented example, with our overrides.
PROFILES: list[dict[str, Any]] = [
    {
        "display_name": "Small (t3.micro)",
        "description": "For the intro course.",
        "default": True,
    },
    {
        "display_name": "Large",
        "slug": "large",
        "spawner_override": {"worker_instance_type": "t3.large", "worker_ebs_size": 40},
        "profile_options": {
            "disk": {
                "display_name": "Home disk",
                "choices": {
                    "small": {"display_name": "10 GB", "spawner_override": {}},
                    "big": {
                        "display_name": "100 GB",
                        "default": True,
                        "spawner_override": {"user_home_ebs_size": 100},
                    },
                },
            },
            "size": {
                "display_name": "Instance type",
                "choices": {"same": {"display_name": "As the profile"}},
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Another t3 type",
                    "validation_regex": r"t3\.(medium|xlarge)",
                    "spawner_override": {
                        "worker_instance_type": "{value}",
                        "extra_tags": {"size": "{value}"},
                    },
                },
            },
        },
    },
    {
        "display_name": "Spot",
        "slug": "spot",
        "spawner_override": {"market": "spot", "idle_timeout": 600},
    },
]


def test_a_kubespawner_shaped_list_loads_and_a_missing_slug_comes_from_the_name() -> None:
    profiles = parse(PROFILES)
    assert [p.key for p in profiles] == ["small-t3-micro", "large", "spot"]
    assert select(profiles, {}).profile.key == "small-t3-micro"  # the default one


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            {"spawner_override": {"worker_instance_type": "huge"}},
            "profile_list: profile 'large' (#2): field spawner_override.worker_instance_type:",
        ),
        (
            {"spawner_override": {"cpu_limit": 2}},
            "profile_list: profile 'large' (#2): field spawner_override.cpu_limit: unknown key",
        ),
        (
            {"kubespawner_override": {}},
            "profile_list: profile 'large' (#2): field kubespawner_override: unknown key",
        ),
        (
            {"spawner_override": {"market": "cheap"}},
            "profile_list: profile 'large' (#2): field spawner_override.market:",
        ),
        (
            {"profile_options": {"x": {"display_name": "X"}}},
            "profile_list: profile 'large' (#2): field profile_options.x:",
        ),
        (
            {"slug": "spot"},
            "profile_list: profile 'spot' (#3): field slug: 'spot' is used by another profile",
        ),
        (
            {"spawner_override": {"extra_tags": {"aws:owner": "x"}}},
            "profile_list: profile 'large' (#2): field spawner_override.extra_tags.aws:owner",
        ),
    ],
    ids=["type", "unknown-override", "kubespawner-key", "market", "no-choices", "dup", "tag"],
)
def test_a_malformed_profile_fails_with_one_line_naming_it_and_the_field(
    change: dict[str, Any], line: str
) -> None:
    bad = [dict(p) for p in PROFILES]
    bad[1] = {**bad[1], **change}
    with pytest.raises(ValueError) as failure:
        parse(bad)
    assert str(failure.value).startswith(line), failure.value
    assert "\n" not in str(failure.value)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"profile": "gpu"}, "option 'profile': no profile 'gpu'; allowed: 'small-t3-micro'"),
        ({"profile": "large", "disk": "huge"}, "option 'disk': no choice 'huge'; allowed:"),
        (
            {"profile": "large", "size--unlisted-choice": "m5.24xlarge"},
            "option 'size': 'm5.24xlarge' is not allowed: must match",
        ),
        ({"profile": ["large"]}, "option 'profile' must be a string, not list"),
        ({"profile": "large", "disk": 3}, "option 'disk' must be a string, not int"),
        ({"profile": "x" * 64}, "option 'profile' is longer than 63 characters"),
        ({"profile": "spot", "disk": "big"}, "option 'disk' is not an option of profile 'spot'"),
        ({"profile": "spot", "replace_instance": "yes"}, "option 'replace_instance' must be"),
        ({"profile": "large", "disk--unlisted-choice": "5"}, "option 'disk' takes only"),
    ],
    ids=["slug", "choice", "regex", "list", "int", "long", "foreign", "replace", "unlisted"],
)
def test_bad_user_options_name_the_option_and_what_is_allowed(
    options: dict[str, Any], names: str
) -> None:
    with pytest.raises(ProfileError) as failure:
        select(parse(PROFILES), options)
    assert names in str(failure.value), failure.value


def test_choices_and_an_unlisted_value_become_overrides() -> None:
    profiles = parse(PROFILES)
    chosen = select(profiles, {"profile": "large", "size--unlisted-choice": "t3.xlarge"})
    assert chosen.overrides == {
        "worker_instance_type": "t3.xlarge",
        "worker_ebs_size": 40,
        "user_home_ebs_size": 100,
        "extra_tags": {"size": "t3.xlarge"},
    }
    assert chosen.user_options() == {
        "profile": "large",
        "disk": "big",
        "size--unlisted-choice": "t3.xlarge",
    }


def test_the_form_posts_what_the_rest_api_takes() -> None:
    form = {
        "profile": ["large"],
        "profile-option-large--disk": ["small"],
        "profile-option-large--size": ["unlisted_choice"],
        "profile-option-large--size--unlisted-choice": ["t3.medium"],
        "profile-option-spot--ignored": ["x"],
        "replace_instance": ["on"],
    }
    assert from_form(form) == {
        "profile": "large",
        "disk": "small",
        "size--unlisted-choice": "t3.medium",
        "replace_instance": True,
    }


def test_the_form_escapes_what_the_admin_wrote() -> None:
    profiles = parse([{"display_name": "<script>alert(1)</script>", "slug": "a"}])
    html = profile_form.render(profiles, "a", notice="<b>note</b>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>" not in html
    assert 'name="profile" id="profile-a"' in html and "checked" in html


def start_options(spawner: InstanceSpawner, options: dict[str, Any]) -> None:
    asyncio.run(spawner.apply_profile(options))


def test_overrides_start_from_the_configured_traits_on_every_start(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, profile_list=PROFILES, worker_ebs_size=12)
    configured = (spawner.worker_instance_type, spawner.user_home_ebs_size)
    start_options(spawner, {"profile": "large", "disk": "big"})
    assert (spawner.worker_instance_type, spawner.worker_ebs_size) == ("t3.large", 40)
    assert spawner.user_home_ebs_size == 100

    start_options(spawner, {"profile": "spot"})
    assert (spawner.worker_instance_type, spawner.user_home_ebs_size) == configured
    assert (spawner.worker_ebs_size, spawner.market, spawner.idle_timeout) == (12, "spot", 600)


def test_the_pick_is_kept_in_the_state_and_reused_when_a_start_gives_none(
    tmp_path: Path,
) -> None:
    first = make_spawner(tmp_path, profile_list=PROFILES)
    start_options(first, {"profile": "large", "disk": "small"})
    state = first.get_state()

    later = make_spawner(tmp_path, profile_list=PROFILES)
    later.load_state(state)
    start_options(later, {})
    assert later.profile_slug == "large" and later.worker_instance_type == "t3.large"
    assert later.user_home_ebs_size == make_spawner(tmp_path).user_home_ebs_size


def test_bad_options_are_an_http_400_and_stop_does_nothing(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, profile_list=PROFILES)
    spawner.instance_id = "i-0123456789abcdef0"
    with pytest.raises(web.HTTPError) as failure:
        start_options(spawner, {"profile": "gpu"})
    assert failure.value.status_code == 400
    assert "option 'profile'" in str(failure.value.log_message)
    # JupyterHub stops a server whose start failed; that must not reach EC2 either.
    asyncio.run(spawner.stop())


def test_a_callable_profile_list_sees_the_spawner(tmp_path: Path) -> None:
    async def by_user(spawner: InstanceSpawner) -> list[dict[str, Any]]:
        return PROFILES if spawner.user.name == "ann" else PROFILES[:1]

    spawner = make_spawner(tmp_path, profile_list=by_user)
    start_options(spawner, {"profile": "spot"})
    assert spawner.market == "spot"
    form = asyncio.run(spawner.get_options_form())
    assert 'value="spot"' in form


def test_a_malformed_profile_list_trait_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraitError, match=r"profile_list: profile 'a' \(#1\): field display_name"):
        make_spawner(tmp_path, profile_list=[{"slug": "a"}])


def test_the_hub_refuses_to_start_with_a_malformed_profile_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply() raises the TraitError JupyterHub reports as one fatal line at start
    (shown with a real jupyterhub for the warm pool's, test_warm_pool_settings)."""
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)
    bad = [PROFILES[0], {**PROFILES[1], "spawner_override": {"worker_ebs_size": 2}}]
    make_passwords(tmp_path)
    settings = demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, {"profile_list": bad})
    with pytest.raises(TraitError) as failure:
        apply(Config(), settings, {})
    assert str(failure.value) == (
        "c.InstanceSpawner.profile_list: profile 'large' (#2): "
        "field spawner_override.worker_ebs_size: Input should be greater than or equal to 8"
    )
    good = demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, {"profile_list": PROFILES})
    c = Config()
    apply(c, good, {})
    assert c.InstanceSpawner.profile_list == PROFILES


def stopped(ec2: LocalCloudEc2, make_worker: Callable[..., Instance]) -> Instance:
    worker = make_worker("ann")
    ec2.stop(worker.id)
    (instance,) = ec2.describe([worker.id])
    assert instance.state == "stopped"
    return instance


def profiled_spawner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ec2: LocalCloudEc2, **traits: Any
) -> InstanceSpawner:
    monkeypatch.setattr(InstanceSpawner, "ec2", property(lambda self: ec2))
    return make_spawner(tmp_path, **traits)


def test_a_stopped_instance_takes_the_picked_profiles_type_in_place(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
    calls: ApiCalls,
) -> None:
    instance = stopped(ec2, make_worker)
    spawner = profiled_spawner(
        tmp_path, monkeypatch, ec2, profile_list=PROFILES, worker_ami=instance.image_id
    )
    start_options(spawner, {"profile": "large"})
    calls.clear()

    assert asyncio.run(spawner.fit_to_profile(instance)) is False
    (after,) = ec2.describe([instance.id])
    assert (after.id, after.instance_type, after.volumes) == (
        instance.id,
        "t3.large",
        instance.volumes,
    )
    assert calls["ModifyInstanceAttribute"] == 1


def test_another_image_needs_the_users_confirmation_to_replace_the_instance(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    make_worker: Callable[..., Instance],
) -> None:
    instance = stopped(ec2, make_worker)
    other_image = [
        {"display_name": "Standard", "slug": "std"},
        {
            "display_name": "GPU",
            "slug": "gpu",
            "spawner_override": {"worker_ami": "ami-0123456789abcdef0"},
        },
    ]
    spawner = profiled_spawner(tmp_path, monkeypatch, ec2, profile_list=other_image)
    spawner._emit = lambda percent, message: None  # type: ignore[method-assign]
    start_options(spawner, {"profile": "gpu"})
    with pytest.raises(SpawnError, match=r"AWS cannot change in place.*replace_instance"):
        asyncio.run(spawner.fit_to_profile(instance))
    assert ec2.describe([instance.id])[0].state == "stopped"  # untouched

    start_options(spawner, {"profile": "gpu", "replace_instance": True})

    async def terminated(instance_id: str, states: tuple[str, ...]) -> Instance:
        return ec2.describe([instance_id])[0]

    spawner._wait_for = terminated  # type: ignore[method-assign]
    assert asyncio.run(spawner.fit_to_profile(instance)) is True
    assert ec2.describe([instance.id])[0].gone
    # Without a profile's image, a rebuilt image never forces a replacement.
    start_options(spawner, {"profile": "std"})
    assert spawner.worker_ami != instance.image_id
    assert spawner.replacement_needed(instance) == ""


@pytest.mark.parametrize("code", ["MaxSpotInstanceCountExceeded", "InsufficientInstanceCapacity"])
def test_a_spot_profile_launches_spot_and_falls_back_to_on_demand_when_aws_cannot(
    code: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
) -> None:
    spawner = profiled_spawner(tmp_path, monkeypatch, ec2, profile_list=PROFILES)
    notes: list[str] = []
    spawner._emit = lambda percent, message: notes.append(message)  # type: ignore[method-assign]
    start_options(spawner, {"profile": "spot"})
    spot_spec = dataclasses.replace(spec, market=spawner.market)

    spot = asyncio.run(spawner.run_worker("ann", "id-1", spot_spec, "cjh-" + "a" * 60))
    assert ec2.describe([spot.id])[0].spot and notes == []

    real = ec2.launch_worker

    def no_spot_capacity(
        user: str,
        spec: WorkerSpec,
        token: str,
        user_id: str,
        paid: Any = None,
        server: str = "",
    ) -> Instance:
        if spec.market == "spot":
            raise CloudError("no spot capacity", code)
        return real(user, spec, token, user_id, paid, server)

    monkeypatch.setattr(ec2, "launch_worker", no_spot_capacity)
    fallback = asyncio.run(spawner.run_worker("ann", "id-1", spot_spec, "cjh-" + "b" * 60))
    assert not ec2.describe([fallback.id])[0].spot
    assert notes == [
        f"AWS cannot give you a spot t3.medium now ({code}); launching an on-demand one instead"
    ]
    assert notes[0] in asyncio.run(spawner.get_options_form())  # said again on the form

    # A spot worker is ended, not stopped (AWS stops only persistent requests' ones).
    spawner.fleet.remember(ec2.describe([spot.id])[0])
    assert asyncio.run(spawner.end_if_spot(spot.id)) is True
    assert ec2.describe([spot.id])[0].state in ("shutting-down", "terminated")
    spawner.fleet.remember(ec2.describe([fallback.id])[0])
    assert asyncio.run(spawner.end_if_spot(fallback.id)) is False


def test_a_reclaimed_spot_instance_is_told_to_the_user() -> None:
    reclaimed = Instance.from_api(
        {
            "InstanceId": "i-0123456789abcdef0",
            "State": {"Name": "terminated"},
            "StateReason": {"Code": "Server.SpotInstanceTermination"},
            "InstanceLifecycle": "spot",
        }
    )
    spawner = InstanceSpawner()
    notes: list[str] = []
    spawner._emit = lambda percent, message: notes.append(message)  # type: ignore[method-assign]
    spawner.tell_if_reclaimed(reclaimed)
    assert notes == [
        "AWS reclaimed your spot instance i-0123456789abcdef0; you get a new one, "
        "with your home volume."
    ]
    assert spawner.profile_notice == notes[0]


def test_extra_tags_are_filled_in_and_go_on_the_worker_and_its_volumes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    spec: WorkerSpec,
) -> None:
    tagged = [
        {
            "display_name": "Course",
            "slug": "course",
            "spawner_override": {"extra_tags": {"course": "intro", "cost": "{profile}"}},
        }
    ]
    spawner = profiled_spawner(tmp_path, monkeypatch, ec2, profile_list=tagged)
    cluster_wide = {"EXTRA_TAGS": {"who": "{username}/{servername}"}}
    spawner._server_config = spawner.server_config.model_copy(update=cluster_wide)
    start_options(spawner, {"profile": "course"})
    tags = spawner.launch_tags("ann!x", "")
    assert tags == {"who": "ann_x/", "course": "intro", "cost": "course"}

    extra = dataclasses.replace(spec, extra_tags=tuple(tags.items()))
    worker = ec2.launch_worker("ann", extra, "cjh-" + "c" * 60, "id-1")
    (instance,) = ec2.describe([worker.id])
    assert {k: instance.tags[k] for k in tags} == tags
    assert instance.user == "ann"  # ours are still ours
    volumes = ec2.client.describe_volumes(VolumeIds=list(instance.volumes))["Volumes"]
    for volume in volumes:
        assert {t["Key"]: t["Value"] for t in volume["Tags"]}["cost"] == "course"
    home = ec2.create_home_volume("ann", 1, instance.availability_zone, "id-1", tags)
    (made,) = ec2.client.describe_volumes(VolumeIds=[home])["Volumes"]
    assert {t["Key"]: t["Value"] for t in made["Tags"]}["who"] == "ann_x/"


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ({"cloudjhub:user": "x"}, "is reserved"),
        ({"Name": "x"}, "is reserved"),
        ({"course": "{user}"}, "only {username}, {servername} and {profile}"),
        ({"course": "a;b"}, "String should match pattern"),
    ],
)
def test_extra_tags_that_aws_or_cloudjhub_would_not_take_are_refused(
    tmp_path: Path, tags: dict[str, str], says: str
) -> None:
    with pytest.raises(TraitError, match=says):
        make_spawner(tmp_path, extra_tags=tags)


def test_demo_config_file_is_loaded_after_the_demos_and_its_profiles_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)
    make_passwords(tmp_path)
    settings = demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, {})
    monkeypatch.setenv(SETTINGS_ENV, str(write_settings(settings, tmp_path / "hub.json")))
    mine = tmp_path / "mine.py"
    mine.write_text(f"c.InstanceSpawner.profile_list = {PROFILES!r}\nc.JupyterHub.port = 9\n")
    stub = DemoStack(state_dir=tmp_path, extra_config=mine)._config_file()

    loaded = PyFileConfigLoader(stub.name, path=str(stub.parent)).load_config()
    assert loaded.InstanceSpawner.profile_list == PROFILES
    assert loaded.JupyterHub.port == 9
    assert loaded.JupyterHub.spawner_class == "cloudjhub"  # the demo's own, underneath

    mine.write_text("c.InstanceSpawner.profile_list = [{'slug': 'x'}]\n")
    with pytest.raises(TraitError, match=r"profile_list: profile 'x' \(#1\): field display_name"):
        PyFileConfigLoader(stub.name, path=str(stub.parent)).load_config()


def test_launch_profiles_reach_the_managers_hub_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)
    base = {"server_config": {}, "bind_ip": "10.0.1.5", "worker_command": ["w"]}
    request = SetupRequest.model_validate({**base, "profile_list": PROFILES})
    settings = manager_settings(tmp_path, tmp_path, request, 3600, None, sys.executable)
    assert settings.spawner.traits["profile_list"] == PROFILES
    with pytest.raises(ValueError, match=r"profile_list: profile 'large' \(#2\)"):
        SetupRequest.model_validate({**base, "profile_list": [PROFILES[0], {"slug": "large"}]})


@pytest.mark.parametrize(
    ("override", "hibernate", "says"),
    [
        ({"worker_instance_type": "t3.huge"}, False, "us-east-1 has no instance type t3.huge"),
        ({"worker_instance_type": "g4dn.xlarge"}, False, "g4dn.xlarge has GPUs"),
        ({"worker_instance_type": "g4dn.xlarge", "worker_ami": "ami-0123456789abcdef0"}, False, ""),
        ({"worker_instance_type": "g4dn.xlarge", "worker_ami": "ami-0123456789abcdef0"},
         True, "g4dn.xlarge cannot hibernate"),
        ({"worker_instance_type": "t3.large", "hibernate": True}, False, ""),
    ],
    ids=["unknown", "gpu-no-image", "gpu-image", "gpu-hibernate", "t3-hibernate"],
)  # fmt: skip
def test_profiles_types_are_checked_against_the_region(
    ec2: LocalCloudEc2, override: dict[str, Any], hibernate: bool, says: str
) -> None:
    profiles = parse(
        [PROFILES[0], {"display_name": "X", "slug": "x", "spawner_override": override}]
    )
    found = profile_types.problems(profiles, ec2.instance_type_info, "us-east-1", hibernate)
    if not says:
        assert found == []
        return
    (line,) = found
    assert line.startswith(
        "profile_list: profile 'x': field spawner_override.worker_instance_type: "
    )
    assert says in line
    with pytest.raises(ValueError, match=says):
        profile_types.check(profiles, ec2.instance_type_info, "us-east-1", hibernate)


def test_the_hub_start_checks_profiles_types_in_its_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: None
) -> None:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)
    make_passwords(tmp_path)
    here = {**SERVER_CONFIG, "AWS_ENDPOINT_URL": None, "REGION": "us-east-1"}  # moto's
    (tmp_path / "server_config.json").write_text(json.dumps(here))
    bad = [
        {"display_name": "X", "slug": "x", "spawner_override": {"worker_instance_type": "t3.huge"}}
    ]
    settings = demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, {"profile_list": bad})
    with pytest.raises(
        TraitError, match=r"^c.InstanceSpawner.profile_list: profile 'x': .* t3.huge"
    ):
        apply(Config(), settings, {})


def test_only_a_profile_like_the_clusters_takes_a_warm_pool_worker(tmp_path: Path) -> None:
    """Pool workers are the cluster's: its image, market, hibernation and root disk
    (server_config's WORKER_EBS_SIZE); the claim itself matches the type."""
    other_type = {
        "display_name": "T",
        "slug": "t",
        "spawner_override": {"worker_instance_type": "t3.large"},
    }
    spawner = make_spawner(tmp_path, profile_list=[*PROFILES, other_type])
    start_options(spawner, {"profile": "t"})
    assert spawner.pool_fits
    start_options(spawner, {"profile": "large"})
    assert spawner.worker_ebs_size == 40 != spawner.server_config.WORKER_EBS_SIZE
    assert not spawner.pool_fits  # its own disk size: launched, not claimed
    start_options(spawner, {"profile": "spot"})
    assert not spawner.pool_fits


def test_a_link_never_confirms_a_replacement_and_a_confirmation_counts_once(
    tmp_path: Path,
) -> None:
    """A GET /hub/spawn?... has no XSRF check; and JupyterHub reuses the last
    user_options on a start that gives none."""
    spawner = make_spawner(tmp_path, profile_list=PROFILES)
    query = spawner.options_from_query({"profile": ["spot"], "replace_instance": ["on"]})
    assert query == {"profile": "spot"}
    assert from_form({"profile": ["spot"], "replace_instance": ["on"]})["replace_instance"]

    kept = {"profile": "spot", "replace_instance": True}
    spawner.orm_spawner = SimpleNamespace(user_options=dict(kept), server=None)
    start_options(spawner, kept)
    assert spawner.replace_instance is True
    assert spawner.orm_spawner.user_options == {"profile": "spot"}


def test_a_kept_pick_the_admin_removed_falls_back_to_the_default(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, profile_list=PROFILES)
    spawner.load_state({"profile_choice": {"profile": "retired"}})
    start_options(spawner, {})
    assert spawner.profile_slug == "small-t3-micro"
    with pytest.raises(web.HTTPError):  # sent in this request: the user's to fix
        start_options(spawner, {"profile": "retired"})


def test_spot_never_hibernates_and_never_runs_without_a_home_volume(tmp_path: Path) -> None:
    spawner = make_spawner(tmp_path, profile_list=PROFILES, hibernate=True)
    start_options(spawner, {"profile": "spot"})
    assert spawner.hibernate and not spawner._spec().hibernate
    homeless = make_spawner(tmp_path, profile_list=PROFILES, user_home_ebs_size=0)
    with pytest.raises(SpawnError, match="market spot needs a home volume"):
        start_options(homeless, {"profile": "spot"})


def test_a_hibernation_enabled_instance_keeps_its_type(
    tmp_path: Path, make_worker: Callable[..., Instance]
) -> None:
    spawner = make_spawner(tmp_path, profile_list=PROFILES)
    start_options(spawner, {"profile": "large"})
    worker = dataclasses.replace(make_worker("ann"), hibernation=True)
    assert "its type (t3.medium) is fixed" in spawner.replacement_needed(worker)
    assert spawner.replacement_needed(dataclasses.replace(worker, hibernation=False)) == ""


def test_an_instance_of_a_fallback_type_restarts_as_it_is(
    tmp_path: Path, make_worker: Callable[..., Instance]
) -> None:
    """A launch without capacity got a fallback type: a restart neither changes it back
    into the shortage nor, with hibernation, asks the user to replace it."""
    spawner = make_spawner(
        tmp_path, worker_instance_type="t3.medium", worker_instance_type_fallbacks=["t3.large"]
    )
    start_options(spawner, {})
    worker = dataclasses.replace(make_worker("ann"), instance_type="t3.large", hibernation=True)
    assert spawner.replacement_needed(worker) == ""
    assert spawner._type_fits(worker)
    assert not spawner._type_fits(dataclasses.replace(worker, instance_type="t3.xlarge"))
