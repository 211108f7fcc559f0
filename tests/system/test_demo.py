"""The whole system through `cloudjhub demo`: a real hub, proxy, culler, sshd and
single-user servers, with EC2 played by moto and the fleet emulator; named servers
(`--named-servers 2 --home-volume-size 1`), each its own instance; a shared course
folder with dropboxes (`--shared-storage --dropbox`)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
import requests
import websocket
from botocore.exceptions import ClientError
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from cloudjhub.local.demo import DemoStack
from cloudjhub.local.ports import free_port
from cloudjhub.remote import tcp_open
from tests.system.browser import chromium, sign_in
from tests.system.conftest import CLI, Demo, running_demo

pytestmark = pytest.mark.system

IDLE_TIMEOUT = 15
# Its own loopback range, so it never meets another local cloud on this machine.
VPC_CIDR = "127.201.0.0/16"


# `--config`: profiles, for users whose name starts with "picks-" only (a callable
# profile_list), so everyone else spawns without a form.
HUB_CONFIG = """
PROFILES = [
    {"display_name": "Standard", "slug": "standard", "default": True},
    {
        "display_name": "Large <b>not bold</b>",
        "slug": "large",
        "description": "For big data & more",
        "spawner_override": {
            "worker_instance_type": "t3.large",
            "extra_tags": {"course": "{profile}-{username}"},
        },
        "profile_options": {
            "size": {
                "display_name": "Size",
                "choices": {"same": {"display_name": "As the profile"}},
                "unlisted_choice": {
                    "enabled": True,
                    "validation_regex": "t3\\\\.(small|xlarge)",
                    "spawner_override": {"worker_instance_type": "{value}"},
                },
            },
        },
    },
]


async def profiles_for(spawner):
    return PROFILES if spawner.user.name.startswith("picks-") else []


c.InstanceSpawner.profile_list = profiles_for
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    # Named servers (at most 2 a user) with their own home volumes, for the
    # named-server test; every other test uses default servers only.
    state = tmp_path_factory.mktemp("demo")
    config = state.parent / f"{state.name}-hub-config.py"
    config.write_text(HUB_CONFIG)
    extra = ("--config", str(config), "--named-servers", "2", "--home-volume-size", "1")
    extra += ("--shared-storage", "--dropbox")
    with running_demo(state, IDLE_TIMEOUT, VPC_CIDR, *extra) as running:
        yield running


def cli_env(demo: Demo) -> dict[str, str]:
    """The CLI's environment as an admin's on the hub's machine (the demo's hub.json)."""
    return {
        **os.environ,
        "CLOUDJHUB_HUB_SETTINGS": str(demo.state_dir / "hub.json"),
        "AWS_SHARED_CREDENTIALS_FILE": str(demo.state_dir / "aws-credentials"),
        "AWS_ENDPOINT_URL": demo.endpoint,
        "AWS_DEFAULT_REGION": DemoStack.region,
    }


CLOUDJHUB = str(Path(sys.executable).with_name("cloudjhub"))


def cloudjhub(demo: Demo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLOUDJHUB, *args],
        capture_output=True,
        text=True,
        env=cli_env(demo),
        timeout=60,
        check=False,
    )


def _followers(user: str) -> list[int]:
    """Pids of `cloudjhub-worker log --follow` for `user` (the demo's instances are
    this machine's processes)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = b"--follow" in argv and b"log" in argv and user.encode() in argv
        if ours and any(a.endswith(b"cloudjhub-worker") for a in argv[:2]):
            found.append(int(proc.name))
    return found


def _follow_logs(demo: Demo, user: str) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """`cloudjhub logs --follow` running, its output gathered as it comes."""
    follower = subprocess.Popen(
        [CLOUDJHUB, "logs", "demo", user, "--follow", "--lines", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(demo),
    )
    out: list[bytes] = []
    assert follower.stdout is not None
    threading.Thread(
        target=lambda: out.extend(iter(follower.stdout.readline, b"")), daemon=True
    ).start()
    try:
        deadline = time.monotonic() + 30
        while not _followers(user):
            assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
            assert time.monotonic() < deadline, "the worker's log --follow never ran"
            time.sleep(0.2)
    except BaseException:
        _ended(follower, user, timeout=0)
        raise
    return follower, out


def _ended(follower: subprocess.Popen[bytes], user: str, timeout: float = 15) -> str:
    """How the CLI ended (its stderr); its end ends the instance's follower too."""
    try:
        _, err = follower.communicate(timeout=timeout) if timeout else (b"", b"")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    deadline = time.monotonic() + 15
    while _followers(user):
        assert time.monotonic() < deadline, "the worker still follows the log"
        time.sleep(0.2)
    return err.decode(errors="replace")


def follows_until_interrupted(demo: Demo, user: str) -> None:
    """`cloudjhub logs --follow` (a subprocess, as an admin runs it) prints a line the
    user's server writes after it began, and ends on Ctrl-C (SIGINT) or a terminate."""
    follower, out = _follow_logs(demo, user)
    marker = f"followed-{uuid.uuid4().hex}"
    missing = demo.request("GET", f"{demo.hub_url}user/{user}/api/contents/{marker}")
    assert missing.status_code == 404
    deadline = time.monotonic() + 30
    while not any(marker.encode() in line for line in out):
        if time.monotonic() > deadline:
            _ended(follower, user, timeout=0)
            raise AssertionError(b"".join(out)[-2000:])
        time.sleep(0.2)
    follower.send_signal(signal.SIGINT)
    err = _ended(follower, user)
    assert follower.returncode == 0 and "Traceback" not in err, (follower.returncode, err)

    follower, _ = _follow_logs(demo, user)
    follower.terminate()
    err = _ended(follower, user)
    assert follower.returncode == 0 and "Traceback" not in err, (follower.returncode, err)


def test_two_users_get_their_own_instances_and_files_survive_stop(demo: Demo) -> None:
    first = demo.start("alice")
    demo.start("bob")
    (alice_instance,) = demo.instances("alice")
    (bob_instance,) = demo.instances("bob")
    assert alice_instance["InstanceId"] != bob_instance["InstanceId"]
    assert alice_instance["PrivateIpAddress"] != bob_instance["PrivateIpAddress"]

    for user in ("alice", "bob"):
        status = demo.request("GET", f"{demo.hub_url}user/{user}/api/status")
        assert status.status_code == 200, status.text
        assert "started" in status.json()

    note = {"type": "file", "format": "text", "content": f"written {uuid.uuid4()}"}
    put = demo.request("PUT", f"{demo.hub_url}user/alice/api/contents/note.txt", json=note)
    assert put.status_code in (200, 201), put.text
    # A line alice's server writes to its log (it logs a 404 with its path).
    marker = f"no-such-file-{uuid.uuid4().hex}"
    missing = demo.request("GET", f"{demo.hub_url}user/alice/api/contents/{marker}")
    assert missing.status_code == 404

    demo.stop("alice")
    demo.wait_state("alice", "stopped")
    assert demo.state_of("bob") == "running"
    # Stopped: nobody to ask; `cloudjhub logs` prints the tail the hub kept before it
    # stopped the instance.
    kept = cloudjhub(demo, "logs", "demo", "alice")
    assert kept.returncode == 0 and marker in kept.stdout, kept.stderr
    assert f"{alice_instance['InstanceId']} is stopped; last" in kept.stderr
    deadline = time.monotonic() + 15
    while tcp_open(alice_instance["PrivateIpAddress"], 8888, timeout=0.5):
        assert time.monotonic() < deadline, "Jupyter still answers on a stopped instance"
        time.sleep(0.2)

    again = demo.start("alice")
    (restarted,) = demo.instances("alice")
    assert restarted["InstanceId"] == alice_instance["InstanceId"]
    got = demo.request("GET", f"{demo.hub_url}user/alice/api/contents/note.txt").json()
    assert got["content"] == note["content"]
    # Running: read from her instance over the hub's pinned SSH (the log outlives a stop).
    live = cloudjhub(demo, "logs", "demo", "alice", "--lines", "500")
    assert live.returncode == 0 and marker in live.stdout, live.stderr
    follows_until_interrupted(demo, "alice")
    print(f"\nspawn-to-ready: first start {first:.1f}s, restart {again:.1f}s")
    demo.stop("alice")
    demo.stop("bob")


def test_a_release_in_the_shared_folder_is_read_only_for_students_writable_for_staff(
    demo: Demo, tmp_path: Path
) -> None:
    course = tmp_path / "week1"
    course.mkdir()
    (course / "notes.md").write_text("read me")
    config = str(demo.state_dir / "server_config.json")
    released = cloudjhub(demo, "release", "demo", str(course), "--server-config", config)
    assert released.returncode == 0, released.stderr
    assert demo.request("POST", "/users/tess", json={"admin": True}).status_code == 201
    demo.start("sally")
    demo.start("tess")

    def contents(user: str, path: str, method: str = "GET", text: str = "") -> requests.Response:
        url = f"{demo.hub_url}user/{user}/api/contents/shared/{path}"
        body = {"type": "file", "format": "text", "content": text} if method == "PUT" else None
        return demo.request(method, url, json=body)

    # Through each user's own Jupyter (its contents API), in ~/shared -> /srv/shared.
    got = contents("sally", "week1/notes.md")
    assert got.status_code == 200 and got.json()["content"] == "read me", got.text
    refused = contents("sally", "week1/notes.md", "PUT", "overwritten")
    # Jupyter answers the mount's EROFS as 403 "Permission denied".
    assert refused.status_code == 403 and "Permission denied" in refused.text, refused.text
    # A new file: Jupyter answers the same EROFS as 500; nothing reaches the file system.
    assert contents("sally", "week1/mine.md", "PUT", "x").status_code in (403, 500)
    (efs,) = (demo.state_dir / "efs").iterdir()
    assert not (efs / "week1" / "mine.md").exists()
    assert (efs / "week1" / "notes.md").read_text() == "read me"
    assert contents("sally", "demo/dropbox/sally/answer.md", "PUT", "42").status_code == 201
    assert contents("tess", "week1/solutions.md", "PUT", "staff").status_code == 201
    assert contents("sally", "week1/solutions.md").json()["content"] == "staff"
    assert contents("sally", "week1/notes.md").json()["content"] == "read me"
    demo.stop("sally")
    demo.stop("tess")


async def _start_busy_kernel(demo: Demo, user: str) -> str:
    base = f"{demo.hub_url}user/{user}/api/kernels"
    kernel = demo.request("POST", base, json={"name": "python3"}).json()
    ws_url = base.replace("http://", "ws://") + f"/{kernel['id']}/channels"
    conn = await websocket_connect(
        HTTPRequest(ws_url, headers={"Authorization": f"token {demo.token}"})
    )
    session = uuid.uuid4().hex
    msg_id = uuid.uuid4().hex
    await conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "session": session,
                    "username": user,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "content": {
                    # Silent work: no output, so only "busy" shows it is alive.
                    "code": "import time\nwhile True:\n    time.sleep(1)\n",
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        raw = await conn.read_message()
        assert raw is not None, "kernel websocket closed"
        msg = json.loads(raw)
        if (
            msg.get("msg_type") == "status"
            and msg["parent_header"].get("msg_id") == msg_id
            and msg["content"]["execution_state"] == "busy"
        ):
            conn.close()
            return str(kernel["id"])
    raise AssertionError("kernel never went busy")


class OpenTab(threading.Thread):
    """What an open, untouched JupyterLab tab does: polls the server's API and keeps
    a kernel websocket open, without running anything."""

    def __init__(self, demo: Demo, user: str) -> None:
        super().__init__(daemon=True)
        self.demo, self.user = demo, user
        self.done = threading.Event()
        self.polls = 0

    def run(self) -> None:
        base = f"{self.demo.hub_url}user/{self.user}/api"
        kernel = self.demo.request("POST", f"{base}/kernels", json={"name": "python3"}).json()
        ws = websocket.create_connection(
            base.replace("http://", "ws://") + f"/kernels/{kernel['id']}/channels",
            header=[f"Authorization: token {self.demo.token}"],
        )
        try:
            while not self.done.wait(1.0):
                for path in ("/kernels", "/sessions", "/terminals", "/contents?content=1"):
                    try:
                        self.demo.request("GET", base + path)
                        self.polls += 1
                    except requests.RequestException:
                        return  # the server went away: culled
        finally:
            ws.close()


async def test_idle_server_is_culled_and_busy_kernel_is_not(demo: Demo) -> None:
    demo.start("carol")
    demo.start("dave")
    demo.start("ivy")
    tab = OpenTab(demo, "ivy")
    tab.start()
    await _start_busy_kernel(demo, "dave")
    began = time.monotonic()
    try:
        # carol does nothing; ivy only has an open tab: both must be culled.
        deadline = began + IDLE_TIMEOUT * 4 + 30
        while demo.server("carol") is not None or demo.server("ivy") is not None:
            assert time.monotonic() < deadline, (
                "an idle server (carol, or ivy's open tab) was not culled"
            )
            time.sleep(1)
        culled_after = time.monotonic() - began
        assert tab.polls > 10, "the open tab never polled"
    finally:
        tab.done.set()
        tab.join(timeout=30)
    demo.wait_state("carol", "stopped")
    demo.wait_state("ivy", "stopped")
    # dave's kernel is computing: his server must still be there, well past the timeout.
    while time.monotonic() - began < IDLE_TIMEOUT * 2.5:
        time.sleep(1)
    assert demo.server("dave") is not None, "a busy kernel's server was culled"
    assert demo.state_of("dave") == "running"
    print(f"\nidle servers (one with an open tab) culled within {culled_after:.1f}s")
    demo.stop("dave")
    demo.wait_state("dave", "stopped")


def test_a_failed_spawn_answers_the_api_with_a_sentence(demo: Demo) -> None:
    """JupyterHub answers a spawn that fails within slow_spawn_timeout with a 500 whose
    `message` is the exception's jupyterhub_message, else 'Internal Server Error'.
    Here the instance's host key changed while it was stopped: refused, in words; the
    admin reads the same words in the admin page (the server's state)."""
    demo.start("mallory")
    (instance,) = demo.instances("mallory")
    demo.stop("mallory")
    demo.wait_state("mallory", "stopped")
    root = demo.state_dir / "instances" / instance["InstanceId"]
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()

    reply = demo.request("POST", "/users/mallory/server")
    if reply.status_code == 202:  # slower than slow_spawn_timeout: the spawn page's words
        with demo.request("GET", "/users/mallory/server/progress", stream=True) as events:
            lines = [line for line in events.iter_lines(decode_unicode=True) if line]
        message = json.loads(lines[-1].removeprefix("data:"))["message"]
    else:
        assert reply.status_code == 500, reply.text
        message = reply.json()["message"]
    assert "does not match the pinned key" in message, message
    assert "Internal Server Error" not in message
    status = cloudjhub(demo, "status", "demo", "mallory")
    assert status.returncode == 0, status.stderr
    assert "failed to spawn" in status.stdout and "does not match the pinned key" in status.stdout
    assert demo.state_of("mallory") in ("running", "stopping", "stopped")

    # An admin sees it too, in the admin page's row of mallory's server (its state).
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, demo.hub_url, "admin", demo.password("admin"))
        page.wait_for_url("**/hub/**", timeout=60_000)
        page.goto(demo.hub_url + "hub/admin?name_filter=mallory")
        page.click('[data-testid="mallory-collapse-button"]', timeout=30_000)
        server_row = page.locator("#mallory-card-group")
        server_row.get_by_text("does not match the pinned key").first.wait_for(timeout=30_000)
        assert "last_spawn_failure" in server_row.inner_text()


def test_a_deleted_users_name_reused_gets_a_new_instance_and_home(demo: Demo) -> None:
    """DELETE /hub/api/users/NAME terminates the user's instance (delete_forever); a new
    user of the same name gets a new instance with empty files, never the old one."""
    demo.start("dora")
    (old,) = demo.instances("dora")
    note = {"type": "file", "format": "text", "content": "the old dora's"}
    put = demo.request("PUT", f"{demo.hub_url}user/dora/api/contents/note.txt", json=note)
    assert put.status_code in (200, 201), put.text
    old_id = old["InstanceId"]
    old_tags = {t["Key"]: t["Value"] for t in old["Tags"]}
    assert old_tags["cloudjhub:user-id"]
    demo.stop("dora")

    deleted = demo.request("DELETE", "/users/dora")
    assert deleted.status_code == 204, deleted.text
    states = {i["InstanceId"]: i["State"]["Name"] for i in demo.instances("dora")}
    assert states[old_id] in ("shutting-down", "terminated")

    demo.start("dora")
    live = [i for i in demo.instances("dora") if i["State"]["Name"] == "running"]
    assert [i["InstanceId"] for i in live] != [old_id] and len(live) == 1
    new_tags = {t["Key"]: t["Value"] for t in live[0]["Tags"]}
    assert new_tags["cloudjhub:user-id"] != old_tags["cloudjhub:user-id"]
    got = demo.request("GET", f"{demo.hub_url}user/dora/api/contents/note.txt")
    assert got.status_code == 404, got.text
    demo.stop("dora")


def _login(demo: Demo, user: str, password: str) -> requests.Response:
    session = requests.Session()
    page = session.get(demo.hub_url + "hub/login", timeout=30)
    xsrf = session.cookies.get("_xsrf") or ""
    assert page.status_code == 200
    return session.post(
        demo.hub_url + "hub/login",
        data={"username": user, "password": password, "_xsrf": xsrf},
        allow_redirects=False,
        timeout=30,
    )


def test_sign_in_takes_only_the_demos_own_passwords(demo: Demo) -> None:
    """Not any password: admin's is the printed admin password, other names the user
    password; the two are not interchangeable."""
    admin, user = demo.password("admin"), demo.password("user")
    assert len(admin) >= 32 and len(user) >= 12

    for name, password in (
        ("admin", "wrong"),
        ("admin", user),
        ("admin", ""),
        ("eve", "anything"),
        ("eve", admin),
    ):
        refused = _login(demo, name, password)
        assert refused.status_code == 403, (name, refused.status_code)
        assert "jupyterhub-hub-login" not in refused.headers.get("Set-Cookie", "")
    assert _login(demo, "admin", admin).status_code == 302
    assert _login(demo, "eve", user).status_code == 302


def test_state_folder_is_its_owners_and_the_endpoint_wants_its_credentials(
    demo: Demo,
) -> None:
    assert stat.S_IMODE(demo.state_dir.stat().st_mode) == 0o700
    for name in ("admin_password", "user_password", "aws-credentials", "hub.json"):
        assert stat.S_IMODE((demo.state_dir / name).stat().st_mode) == 0o600, name
    # What the demo itself writes (the folder's mode guards the instances' own files).
    own = [*demo.state_dir.glob("*"), *(demo.state_dir / "keys").glob("*")]
    world_readable = [p.name for p in own if p.is_file() and p.stat().st_mode & stat.S_IROTH]
    assert world_readable in ([], ["demo.out"]), world_readable  # demo.out: the test's own

    assert demo.ec2().describe_instances()["ResponseMetadata"]["HTTPStatusCode"] == 200
    stranger = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=demo.endpoint,
        aws_access_key_id="local-demo",
        aws_secret_access_key="local-demo",
    )
    with pytest.raises(ClientError) as refused:
        stranger.describe_instances()
    assert refused.value.response["Error"]["Code"] in {"AuthFailure", "InvalidClientTokenId"}


def test_a_person_signs_in_in_chromium_and_lands_in_jupyterlab(demo: Demo) -> None:
    """What a student sees: the login page, the spawn wait, then JupyterLab's own UI."""
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, demo.hub_url, "ruth", demo.password("user"))
        page.wait_for_url("**/user/ruth/lab**", timeout=120_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        assert "JupyterLab" in page.title()
    assert demo.state_of("ruth") == "running"


def test_bad_user_options_answer_400_and_launch_nothing(demo: Demo) -> None:
    demo.request("POST", "/users/picks-pat")
    for options, names in [
        ({"profile": "gpu"}, "option 'profile': no profile 'gpu'; allowed: 'standard', 'large'"),
        ({"profile": "large", "size": "huge"}, "option 'size': no choice 'huge'"),
        ({"profile": "large", "size--unlisted-choice": "p4d.24xlarge"}, "must match"),
        ({"profile": 7}, "option 'profile' must be a string"),
        ({"profile": "x" * 500}, "option 'profile' is longer than 63 characters"),
        ({"profile": "standard", "size": "same"}, "not an option of profile 'standard'"),
    ]:
        reply = demo.request("POST", "/users/picks-pat/server", json={"user_options": options})
        assert reply.status_code == 400, (options, reply.status_code, reply.text)
        assert names in reply.json()["message"], reply.text
    assert demo.instances("picks-pat") == []


def test_a_person_picks_a_profile_then_switches_it_through_the_api(demo: Demo) -> None:
    """On the options form in Chromium, then with the REST API: the stopped instance
    takes the new type in place, and keeps a file written before."""
    user = "picks-lee"
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, demo.hub_url, user, demo.password("user"))
        page.wait_for_selector("#profile-large", timeout=60_000)
        # The admin's text is shown as text, never as markup.
        assert "Large <b>not bold</b>" in page.inner_text("label[for=profile-large]")
        page.check("#profile-large")
        page.select_option("#profile-option-large--size", "unlisted_choice")
        page.fill("#profile-option-large--size--unlisted-choice", "t3.xlarge")
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url(f"**/user/{user}/lab**", timeout=120_000)
    (first,) = demo.instances(user)
    assert first["InstanceType"] == "t3.xlarge"
    assert {t["Key"]: t["Value"] for t in first["Tags"]}["course"] == f"large-{user}"
    note = {"type": "file", "format": "text", "content": f"written {uuid.uuid4()}"}
    put = demo.request("PUT", f"{demo.hub_url}user/{user}/api/contents/note.txt", json=note)
    assert put.status_code in (200, 201), put.text
    demo.stop(user)
    demo.wait_state(user, "stopped")

    started = demo.request(
        "POST", f"/users/{user}/server", json={"user_options": {"profile": "standard"}}
    )
    assert started.status_code in (201, 202), started.text
    deadline = time.monotonic() + 120
    while not (demo.server(user) or {}).get("ready"):
        assert demo.server(user) is not None, f"see {demo.state_dir}/jupyterhub.log"
        assert time.monotonic() < deadline, f"{user}'s server was not ready within 120 s"
        time.sleep(0.2)
    (again,) = demo.instances(user)
    assert (again["InstanceId"], again["InstanceType"]) == (first["InstanceId"], "t3.medium")
    got = demo.request("GET", f"{demo.hub_url}user/{user}/api/contents/note.txt").json()
    assert got["content"] == note["content"]
    demo.stop(user)


NOTEBOOK = '{"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {}}'


def _served_git_repo(tmp: Path) -> tuple[Path, str]:
    """A repository with one notebook, as a bare repo for `git daemon` to serve."""
    work = tmp / "course-src"
    work.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (work / "lesson1.ipynb").write_text(NOTEBOOK)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "lesson 1"], check=True)
    served = tmp / "served"
    served.mkdir()
    bare = served / "course.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return served, "course.git"


def test_a_release_and_an_nbgitpuller_link_reach_a_students_home(
    demo: Demo, tmp_path: Path
) -> None:
    """`cloudjhub release` lands in the home at the next start, without overwriting;
    an nbgitpuller link clones a repository served on loopback into the home."""
    course = tmp_path / "week1"
    course.mkdir()
    (course / "intro.ipynb").write_text(NOTEBOOK)
    (course / "notes.txt").write_text("from the teacher")
    released = subprocess.run(
        [CLI, "release", "demo", str(course), "--releases-dir", str(demo.state_dir / "releases")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert released.returncode == 0, released.stderr
    demo.request("POST", "/users/erin")
    demo.start("erin")
    contents = f"{demo.hub_url}user/erin/api/contents/"
    assert demo.request("GET", contents + "week1/intro.ipynb").status_code == 200
    mine = {"type": "file", "format": "text", "content": "my own notes"}
    assert demo.request("PUT", contents + "week1/notes.txt", json=mine).status_code == 200

    served, name = _served_git_repo(tmp_path)
    port = free_port()
    # git's own daemon (shallow clones, as nbgitpuller makes, need more than dumb HTTP).
    # Run git-daemon itself, not through `git`, so the pid we end is the daemon's.
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True).stdout
    daemon = subprocess.Popen(
        [
            Path(exec_path.strip()) / "git-daemon",
            "--export-all",
            "--reuseaddr",
            f"--base-path={served}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(served),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port = time.monotonic() + 10
        while not tcp_open("127.0.0.1", port, timeout=0.5):
            assert time.monotonic() < wait_for_port, "the git server did not listen"
            time.sleep(0.1)
        query = urlencode(
            {
                "repo": f"git://127.0.0.1:{port}/{name}",
                "branch": "main",
                "targetpath": "course",
                "urlpath": "lab",
            }
        )
        # erin follows the link in her browser: sign in, user-redirect, OAuth, the page.
        browser = requests.Session()
        browser.get(demo.hub_url + "hub/login", timeout=30)
        xsrf = browser.cookies.get("_xsrf") or ""
        form = {"username": "erin", "password": demo.password(), "_xsrf": xsrf}
        assert browser.post(demo.hub_url + "hub/login", data=form, timeout=30).ok
        link = browser.get(f"{demo.hub_url}hub/user-redirect/git-pull?{query}", timeout=60)
        assert link.status_code == 200 and "/user/erin/git-pull" in link.url, link.url
        # What the page then does: pull, reading nbgitpuller's event stream to its end.
        pull = browser.get(f"{demo.hub_url}user/erin/git-pull/api?{query}", timeout=60)
        assert '"phase": "finished"' in pull.text, pull.text[-2000:]
    finally:
        daemon.terminate()
        daemon.wait(10)
    assert demo.request("GET", contents + "course/lesson1.ipynb").status_code == 200

    demo.stop("erin")
    demo.start("erin")  # a restart brings nothing back over the user's own files
    got = demo.request("GET", contents + "week1/notes.txt").json()
    assert got["content"] == "my own notes"
    demo.stop("erin")


# ---- named servers: each its own instance ------------------------------------------


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def by_server(demo: Demo, user: str) -> dict[str, dict[str, Any]]:
    """The user's instances not terminated, by their server tag ("" the default)."""
    return {
        tags(i).get("cloudjhub:server", ""): i
        for i in demo.instances(user)
        if i["State"]["Name"] not in ("shutting-down", "terminated")
    }


def wait_ready(demo: Demo, user: str, names: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        servers = demo.request("GET", f"/users/{user}").json()["servers"]
        missing = [n for n in names if not (servers.get(n) or {}).get("ready")]
        if not missing:
            return
        assert all(n in servers for n in names), f"spawn failed; see {demo.state_dir}"
        assert time.monotonic() < deadline, f"{missing} not ready"
        time.sleep(0.3)


def test_two_named_servers_are_two_instances_removed_and_renamed_alone(
    demo: Demo,
) -> None:
    demo.request("POST", "/users/nora")
    for name in ("one", "two"):
        reply = demo.request("POST", f"/users/nora/servers/{name}")
        assert reply.status_code in (201, 202), reply.text
    wait_ready(demo, "nora", ["one", "two"])

    mine = by_server(demo, "nora")
    assert set(mine) == {"one", "two"}  # no default server: none launched
    assert mine["one"]["InstanceId"] != mine["two"]["InstanceId"]
    for name in ("one", "two"):  # both answer (and count as active: the culler waits)
        note = {"type": "file", "format": "text", "content": f"on {name}'s home"}
        url = f"{demo.hub_url}user/nora/{name}/api/contents/n.txt"
        put = demo.request("PUT", url, json=note)
        assert put.status_code in (200, 201), put.text

    # named_server_limit_per_user = 2: a third is refused, and nothing is launched.
    third = demo.request("POST", "/users/nora/servers/three")
    assert third.status_code == 400 and "maximum of 2" in third.json()["message"]
    assert len(demo.instances("nora")) == 2

    ec2 = demo.ec2()
    homes = ec2.describe_volumes(
        Filters=[
            {"Name": "tag:cloudjhub:user", "Values": ["nora"]},
            {"Name": "tag:cloudjhub:role", "Values": ["home"]},
        ]
    )["Volumes"]
    home_of = {tags(v).get("cloudjhub:server", ""): v["VolumeId"] for v in homes}
    assert set(home_of) == {"one", "two"}

    removed = demo.request("DELETE", "/users/nora/servers/one", json={"remove": True})
    assert removed.status_code in (202, 204), removed.text
    deadline = time.monotonic() + 120
    while (
        "one" in by_server(demo, "nora")
        or "one" in demo.request("GET", "/users/nora").json()["servers"]
    ):
        assert time.monotonic() < deadline, "server one was not removed"
        time.sleep(0.5)

    states = {i["InstanceId"]: i["State"]["Name"] for i in demo.instances("nora")}
    assert states[mine["one"]["InstanceId"]] in ("shutting-down", "terminated")
    # Only one's: two's instance stays (the culler may have stopped it by now).
    assert states[mine["two"]["InstanceId"]] in ("running", "stopping", "stopped")
    kept = ec2.describe_volumes(VolumeIds=[home_of["one"]])["Volumes"][0]
    assert tags(kept)["cloudjhub:server"] == "one"
    assert "cloudjhub:user-deleted" not in tags(kept)

    # Renaming the (stopped) server through the REST API renames its tags.
    stopped = demo.request("DELETE", "/users/nora/servers/two")
    assert stopped.status_code in (202, 204), stopped.text
    while "two" in demo.request("GET", "/users/nora").json()["servers"]:
        assert time.monotonic() < deadline + 60, "server two did not stop"
        time.sleep(0.5)
    renamed = demo.request("PATCH", "/users/nora/servers/two", json={"name": "deux"})
    assert renamed.status_code == 200, renamed.text
    (two,) = ec2.describe_instances(InstanceIds=[mine["two"]["InstanceId"]])["Reservations"]
    assert tags(two["Instances"][0])["cloudjhub:server"] == "deux"
    home = ec2.describe_volumes(VolumeIds=[home_of["two"]])["Volumes"][0]
    assert tags(home)["cloudjhub:server"] == "deux"
