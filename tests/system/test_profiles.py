"""Profiles through `cloudjhub demo --profiles FILE`: a real hub, its options form in
Chromium, its REST API, and the instances the local cloud runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.browser import chromium, sign_in
from tests.system.conftest import Demo, running_demo

pytestmark = pytest.mark.system

# Its own loopback range, so it never meets another local cloud on this machine.
VPC_CIDR = "127.207.0.0/16"
PROFILES_YAML = """\
- display_name: Standard
  slug: standard
  default: true
- display_name: Large <b>not bold</b>
  slug: large
  description: For big data & more
  spawner_override:
    worker_instance_type: t3.large
  profile_options:
    size:
      display_name: Size
      choices:
        same:
          display_name: As the profile
      unlisted_choice:
        enabled: true
        display_name: Another t3 type
        validation_regex: 't3\\.(small|xlarge)'
        spawner_override:
          worker_instance_type: "{value}"
- display_name: Spot
  slug: spot
  spawner_override:
    market: spot
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    state = tmp_path_factory.mktemp("profiles")
    profiles = Path(state.parent / "profiles.yaml")
    profiles.write_text(PROFILES_YAML)
    # AWS's behaviour, quickened, with every spot launch refused for want of capacity.
    like_aws = ("--like-aws", "--time-scale", "0.02", "--fault", "MaxSpotInstanceCountExceeded")
    with running_demo(state, 600, VPC_CIDR, "--profiles", str(profiles), *like_aws) as running:
        yield running


def spawn(demo: Demo, user: str, options: dict[str, Any]) -> Any:
    return demo.request("POST", f"/users/{user}/server", json={"user_options": options})


def wait_ready(demo: Demo, user: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        server = demo.server(user)
        assert server is not None, f"{user}'s spawn failed; see {demo.state_dir}/jupyterhub.log"
        if server.get("ready"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{user}'s server was not ready within 120 s")


def test_bad_user_options_answer_400_and_launch_nothing(demo: Demo) -> None:
    demo.request("POST", "/users/pat")
    for options, names in [
        ({"profile": "gpu"}, "option 'profile': no profile 'gpu'; allowed: 'standard', 'large'"),
        ({"profile": "spot", "size": "same"}, "option 'size' is not an option of profile 'spot'"),
        ({"profile": "large", "size": "huge"}, "option 'size': no choice 'huge'"),
        ({"profile": "large", "size--unlisted-choice": "p4d.24xlarge"}, "must match"),
        ({"profile": 7}, "option 'profile' must be a string"),
        ({"profile": "x" * 500}, "option 'profile' is longer than 63 characters"),
    ]:
        reply = spawn(demo, "pat", options)
        assert reply.status_code == 400, (options, reply.status_code, reply.text)
        assert names in reply.json()["message"], reply.text
    assert demo.instances("pat") == []


def test_a_profile_through_the_api_and_a_switch_on_the_stopped_instance(demo: Demo) -> None:
    demo.request("POST", "/users/kim")
    assert spawn(demo, "kim", {"profile": "large"}).status_code in (201, 202)
    wait_ready(demo, "kim")
    (first,) = demo.instances("kim")
    assert first["InstanceType"] == "t3.large"
    note = {"type": "file", "format": "text", "content": f"written {uuid.uuid4()}"}
    put = demo.request("PUT", f"{demo.hub_url}user/kim/api/contents/note.txt", json=note)
    assert put.status_code in (200, 201), put.text
    demo.stop("kim")
    demo.wait_state("kim", "stopped")

    assert spawn(demo, "kim", {"profile": "standard"}).status_code in (201, 202)
    wait_ready(demo, "kim")
    (again,) = demo.instances("kim")
    assert again["InstanceId"] == first["InstanceId"]
    assert again["InstanceType"] == "t3.medium"
    got = demo.request("GET", f"{demo.hub_url}user/kim/api/contents/note.txt").json()
    assert got["content"] == note["content"]
    demo.stop("kim")


def test_a_person_picks_a_profile_on_the_options_form(demo: Demo) -> None:
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, demo.hub_url, "lee", demo.password("user"))
        page.wait_for_selector("#profile-large", timeout=60_000)
        # The admin's text is shown as text, never as markup.
        assert "Large <b>not bold</b>" in page.inner_text("label[for=profile-large]")
        page.check("#profile-large")
        page.select_option("#profile-option-large--size", "unlisted_choice")
        page.fill("#profile-option-large--size--unlisted-choice", "t3.xlarge")
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url("**/user/lee/lab**", timeout=120_000)
    (instance,) = demo.instances("lee")
    assert instance["InstanceType"] == "t3.xlarge"
    demo.stop("lee")


def test_a_spot_profile_aws_cannot_fill_falls_back_to_on_demand(demo: Demo) -> None:
    demo.request("POST", "/users/sam")
    assert spawn(demo, "sam", {"profile": "spot"}).status_code in (201, 202)
    wait_ready(demo, "sam")
    (instance,) = demo.instances("sam")
    assert instance.get("InstanceLifecycle") != "spot"
    log = (demo.state_dir / "jupyterhub.log").read_text()
    assert "AWS cannot give you a spot t3.medium now (MaxSpotInstanceCountExceeded)" in log
    demo.stop("sam")
