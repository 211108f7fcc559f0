"""InstanceSpawner driven directly (no hub) against the local cloud.

EC2 is moto's server in this process, every running instance is a machine of
the fleet emulator with a real sshd on its private loopback IP, and the
spawner reaches it over real SSH (paramiko) to run `cloudjhub-worker start`.
The command the agent starts is a tiny fake Jupyter written here, so no hub is
needed: it listens where JUPYTERHUB_SERVICE_URL says and records what it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import paramiko
import pytest
from botocore.exceptions import ClientError
from jupyterhub.objects import Hub, Server
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from cloudjhub import remote
from cloudjhub.aws.hub import WorkerSpec, launch_token
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.fleet import Fleet
from cloudjhub.local import motoserver
from cloudjhub.local.cloud import prepare_demo_cluster, prepare_network
from cloudjhub.local.emulator import FleetEmulator
from cloudjhub.local.ports import free_port
from cloudjhub.remote import CONSOLE_BEGIN, CONSOLE_END, tcp_open
from cloudjhub.spawner import InstanceSpawner, SpawnError
from cloudjhub.tags import CLUSTER_TAG, ROLE_TAG, USER_TAG, Role
from tests.helpers import ApiCalls, alive

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

CLUSTER = "paths"
# Not the demo's region: moto's backends are global to this process.
REGION = "us-west-2"
INSTANCE_TYPE = "t3.medium"
NOTEBOOK_PORT = 8888
INFO_FILE = "fake_server_info.json"
START_TIMEOUT = 60.0

FAKE_SERVER = '''\
"""A stand-in for jupyterhub-singleuser: listen where the hub said, record what we got."""
import hashlib
import http.server
import json
import os
import sys
import urllib.parse

url = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
info = {
    "env": sorted(os.environ),
    "cwd": os.getcwd(),
    "home": os.environ.get("HOME"),
    "argv": sys.argv[1:],
    "pid": os.getpid(),
    "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
    "files": sorted(os.listdir(".")),
}
with open("starts.log", "a") as fh:
    fh.write(f"{os.getpid()}\\n")
with open("fake_server_info.json.tmp", "w") as fh:
    json.dump(info, fh)
os.replace("fake_server_info.json.tmp", "fake_server_info.json")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"fake jupyter"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"fake jupyter listening on {url.hostname}:{url.port}", flush=True)
http.server.HTTPServer((url.hostname, url.port), Handler).serve_forever()
'''

FAILING_SERVER = """\
import sys

print("boom: bad config", file=sys.stderr, flush=True)
sys.exit(1)
"""

# The phases of a first start, in order.
FIRST_START_PHASES = [
    f"Launching your instance ({INSTANCE_TYPE})",
    "Waiting for the instance to boot",
    "Connecting",
    "Starting Jupyter",
]


# --------------------------------------------------------------------------- the cloud


@dataclass
class Cloud:
    endpoint: str
    state_dir: Path
    server_config: Path
    emulator: FleetEmulator
    ec2: LocalCloudEc2  # the test's own door to EC2 (the spawners share another one)
    ssh_port: int
    fake_server: Path
    failing_server: Path
    spec: WorkerSpec
    users: list[str] = field(default_factory=list)

    def client(self) -> Any:
        # A new session: boto3's default one keeps the first credentials it resolved,
        # which may be another module's moto user.
        return boto3.session.Session().client("ec2", region_name=REGION, endpoint_url=self.endpoint)

    def instances(self, user: str) -> list[dict[str, Any]]:
        """Every instance ever launched for the user in this cluster, in any state."""
        reply = self.client().describe_instances(
            Filters=[
                {"Name": f"tag:{CLUSTER_TAG}", "Values": [CLUSTER]},
                {"Name": f"tag:{USER_TAG}", "Values": [user]},
            ]
        )
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    def state_of(self, instance_id: str) -> str:
        reply = self.client().describe_instances(InstanceIds=[instance_id])
        return reply["Reservations"][0]["Instances"][0]["State"]["Name"]

    def root(self, instance_id: str) -> Path:
        return self.emulator.root_of(instance_id)

    def home(self, instance_id: str, user: str) -> Path:
        return self.root(instance_id) / "home" / user

    def worker_log(self, instance_id: str, user: str) -> Path:
        return self.root(instance_id) / "var" / "log" / "cloudjhub" / f"{user}.log"

    def sshd_log(self, instance_id: str) -> Path:
        return self.root(instance_id) / "var" / "log" / "sshd.log"

    @property
    def host_key_store(self) -> Path:
        return self.state_dir / "host_keys.json"

    def pins(self) -> dict[str, list[str]]:
        """The hub's host-key store as it is on disk now."""
        data = json.loads(self.host_key_store.read_text())
        return {i: p["keys"] for i, p in data["instances"].items()}

    def new_user(self, prefix: str) -> str:
        """A user name no earlier test used, so tests never share instances."""
        name = f"{prefix}{len(self.users)}"
        self.users.append(name)
        return name


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """moto + a prepared cluster + the fleet emulator, for the whole module."""
    state_dir = tmp_path_factory.mktemp("cloud")
    with pytest.MonkeyPatch.context() as mp:
        # Placeholder credentials only; never a developer's real AWS config.
        for key, value in motoserver.LOCAL_CREDENTIALS.items():
            mp.setenv(key, value)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_CONFIG_FILE", str(state_dir / "no-aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(state_dir / "no-aws-credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(var, raising=False)
        for var in motoserver.VALIDATION_FLAGS:
            # LocalEc2.start() sets them; restore whatever was there afterwards.
            mp.setenv(var, os.environ.get(var, ""))
        moto = motoserver.LocalEc2()
        endpoint = moto.start()
        for key, value in moto.credentials.items():
            mp.setenv(key, value)
        emulator: FleetEmulator | None = None
        try:
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
            ec2 = LocalCloudEc2.connect(CLUSTER, REGION, endpoint)
            # A /16 of its own, so it never meets the demo's or another run's machines.
            vpc_cidr = f"127.{random.randint(100, 199)}.0.0/16"
            net = prepare_network(ec2, endpoint, REGION, state_dir, vpc_cidr)
            ssh_port = free_port()
            emulator = FleetEmulator(
                ec2,
                state_dir,
                ssh_port,
                role_credentials=moto.role_credentials,
                trusts_key=motoserver.trusts_key,
            )
            emulator.start()
            config = prepare_demo_cluster(
                ec2, net, state_dir, ssh_port, 3600, "console", progress=lambda _m: None
            )
            settings = json.loads(config.read_text())
            fake = state_dir / "fake_server.py"
            fake.write_text(FAKE_SERVER)
            failing = state_dir / "failing_server.py"
            failing.write_text(FAILING_SERVER)
            spec = WorkerSpec(
                image_id=settings["WORKER_AMI"],
                instance_type=INSTANCE_TYPE,
                subnet_id=settings["SUBNET_ID"],
                security_group_ids=tuple(settings["WORKER_SECURITY_GROUPS"]),
                key_name=settings["KEY_NAME"],
                ebs_size=8,
            )
            yield Cloud(endpoint, state_dir, config, emulator, ec2, ssh_port, fake, failing, spec)
        finally:
            if emulator is not None:
                emulator.stop()
            moto.stop()


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Fleet and the per-user locks are per-process caches bound to one event loop."""
    Fleet._shared.clear()
    InstanceSpawner._user_locks.clear()
    yield
    Fleet._shared.clear()
    InstanceSpawner._user_locks.clear()


# --------------------------------------------------------------------------- spawners


def make_spawner(cloud: Cloud, user: str, **traits: Any) -> InstanceSpawner:
    """An InstanceSpawner as the hub would configure it, without a hub or database."""
    # JupyterHub ids its users; a stable one per name here (no user is deleted).
    hub_user = SimpleNamespace(
        name=user, escaped_name=user, url=f"/user/{user}/", id=zlib.crc32(user.encode())
    )
    settings: dict[str, Any] = {
        "server_config_file": str(cloud.server_config),
        "cmd": [sys.executable, str(cloud.fake_server)],
        "worker_command": [str(Path(sys.executable).with_name("cloudjhub-worker"))],
        "state_poll_interval": 0.2,
        "ssh_retry_interval": 0.2,
        "hang_grace": 3.0,
        "fleet_refresh_interval": 1.0,
        "jupyter_start_timeout": 20.0,
        "host_key_store": str(cloud.host_key_store),
        **traits,
    }
    spawner = InstanceSpawner(user=hub_user, hub=Hub(), oauth_client_id=f"jupyterhub-user-{user}")
    for name, value in settings.items():
        setattr(spawner, name, value)
    spawner.api_token = secrets.token_hex(24)
    spawner.server = Server(base_url=f"/user/{user}/")
    return spawner


async def start_watched(spawner: InstanceSpawner, events: list[dict[str, Any]]) -> str:
    """spawner.start() with its progress() read alongside, as the hub does."""

    async def watch() -> None:
        async for event in spawner.progress():
            events.append(event)

    start = asyncio.ensure_future(asyncio.wait_for(spawner.start(), START_TIMEOUT))
    watcher = asyncio.ensure_future(watch())
    try:
        return await start
    finally:
        await asyncio.wait_for(watcher, 10)


def messages(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events]


def in_order(found: list[str], expected: list[str]) -> bool:
    """expected is a subsequence of found."""
    rest = iter(found)
    return all(any(m == want for m in rest) for want in expected)


def read_info(home: Path) -> dict[str, Any]:
    return json.loads((home / INFO_FILE).read_text())


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:  # loopback URL from the spawner
        return reply.read().decode()


def only_instance(cloud: Cloud, user: str) -> dict[str, Any]:
    found = cloud.instances(user)
    assert len(found) == 1, [(i["InstanceId"], i["State"]["Name"]) for i in found]
    return found[0]


# --------------------------------------------------------------------------- 1. first start


async def test_first_start_launches_one_tagged_worker(cloud: Cloud) -> None:
    user = cloud.new_user("first")
    spawner = make_spawner(cloud, user)
    events: list[dict[str, Any]] = []

    url = await start_watched(spawner, events)

    inst = only_instance(cloud, user)
    ip = inst["PrivateIpAddress"]
    assert url == f"http://{ip}:{NOTEBOOK_PORT}"
    assert http_get(url + f"/user/{user}/") == "fake jupyter"
    assert spawner.instance_id == inst["InstanceId"]
    assert inst["State"]["Name"] == "running"
    assert inst["InstanceType"] == INSTANCE_TYPE
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags[CLUSTER_TAG] == CLUSTER
    assert tags[ROLE_TAG] == Role.WORKER.value
    assert tags[USER_TAG] == user

    # The server ran on the instance, in the user's home, with the hub's token.
    home = cloud.home(inst["InstanceId"], user)
    info = read_info(home)
    assert Path(info["cwd"]) == home
    assert Path(info["home"]) == home
    assert "JUPYTERHUB_API_TOKEN" in info["env"]
    assert "JUPYTERHUB_SERVICE_URL" in info["env"]
    assert info["token_sha256"] == hashlib.sha256(spawner.api_token.encode()).hexdigest()
    assert "--allow-root" in info["argv"]

    # The token travelled on the SSH channel only: never to disk or EC2.
    token = spawner.api_token
    log = cloud.worker_log(inst["InstanceId"], user)
    sshd_log = cloud.sshd_log(inst["InstanceId"])
    assert log.is_file()
    assert sshd_log.is_file()
    assert token not in log.read_text(errors="replace")
    assert token not in sshd_log.read_text(errors="replace")
    root = cloud.root(inst["InstanceId"])
    leaked = [
        p
        for p in root.rglob("*")
        if p.is_file() and token.encode() in p.read_bytes()  # any file of the instance
    ]
    assert leaked == []
    client = cloud.client()
    assert token not in json.dumps(inst["Tags"])
    user_data = client.describe_instance_attribute(
        InstanceId=inst["InstanceId"], Attribute="userData"
    ).get("UserData", {})
    assert token not in json.dumps(user_data)

    # Progress: the phases in order, percentages never going back.
    found = messages(events)
    assert in_order(found, FIRST_START_PHASES), found
    assert "Starting your stopped instance" not in found
    percents = [e["progress"] for e in events]
    assert percents == sorted(percents), events
    assert events[-1]["progress"] == 100


# --------------------------------------------------------------------------- 2. stop, resume


async def test_stop_then_start_resumes_the_same_instance(cloud: Cloud) -> None:
    user = cloud.new_user("resume")
    first = make_spawner(cloud, user)
    await start_watched(first, [])
    instance_id = first.instance_id
    assert instance_id
    home = cloud.home(instance_id, user)
    server_pid = read_info(home)["pid"]
    assert alive(server_pid)
    (home / "notes.txt").write_text("written before the stop\n")

    await first.stop()

    assert cloud.state_of(instance_id) == "stopped"
    wait_until(lambda: not alive(server_pid), 15, "the server to end with its instance")
    state = first.get_state()
    assert state["instance_id"] == instance_id

    second = make_spawner(cloud, user)
    second.load_state(state)
    events: list[dict[str, Any]] = []
    url = await start_watched(second, events)

    inst = only_instance(cloud, user)
    assert inst["InstanceId"] == instance_id
    assert inst["State"]["Name"] == "running"
    assert url == f"http://{inst['PrivateIpAddress']}:{NOTEBOOK_PORT}"
    assert "Starting your stopped instance" in messages(events)
    assert not any(m.startswith("Launching") for m in messages(events))
    assert (home / "notes.txt").read_text() == "written before the stop\n"
    info = read_info(home)
    assert info["pid"] != server_pid
    assert "notes.txt" in info["files"]  # the new server saw the file
    assert len((home / "starts.log").read_text().split()) == 2
    assert all(i["State"]["Name"] != "terminated" for i in cloud.instances(user))


# --------------------------------------------------------------------------- 3. state lost


async def test_lost_state_finds_the_instance_by_tags(cloud: Cloud) -> None:
    user = cloud.new_user("lost")
    first = make_spawner(cloud, user)
    await start_watched(first, [])
    instance_id = first.instance_id
    await first.stop()
    assert cloud.state_of(instance_id) == "stopped"
    # moto's stop is instant; the machine halts on the emulator's next look (AWS's own
    # stop takes longer than that), so a start before it would meet the old Jupyter.
    wait_until(lambda: instance_id not in cloud.emulator.machines, 15, "the machine to halt")

    fresh = make_spawner(cloud, user)
    fresh.load_state({})
    events: list[dict[str, Any]] = []
    url = await start_watched(fresh, events)

    inst = only_instance(cloud, user)
    assert inst["InstanceId"] == instance_id == fresh.instance_id
    assert url == f"http://{inst['PrivateIpAddress']}:{NOTEBOOK_PORT}"
    assert "Starting your stopped instance" in messages(events)
    assert fresh.get_state()["instance_id"] == instance_id


# --------------------------------------------------------------------------- 4. concurrent


async def test_concurrent_starts_make_one_instance(cloud: Cloud) -> None:
    user = cloud.new_user("twice")
    one, two = make_spawner(cloud, user), make_spawner(cloud, user)

    urls = await asyncio.gather(start_watched(one, []), start_watched(two, []))

    inst = only_instance(cloud, user)
    expected = f"http://{inst['PrivateIpAddress']}:{NOTEBOOK_PORT}"
    assert urls == [expected, expected]
    assert one.instance_id == two.instance_id == inst["InstanceId"]
    assert http_get(expected + "/") == "fake jupyter"


# --------------------------------------------------------------------------- 5. terminated


async def test_terminated_instance_is_replaced_and_keeps_the_home_volume(cloud: Cloud) -> None:
    user = cloud.new_user("gone")
    first = make_spawner(cloud, user, user_home_ebs_size=1)
    await start_watched(first, [])
    old_id = first.instance_id
    assert old_id
    client = cloud.client()
    volumes = client.describe_volumes(
        Filters=[
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [CLUSTER]},
            {"Name": f"tag:{ROLE_TAG}", "Values": [Role.HOME.value]},
            {"Name": f"tag:{USER_TAG}", "Values": [user]},
        ]
    )["Volumes"]
    assert len(volumes) == 1
    volume_id = volumes[0]["VolumeId"]
    assert volumes[0]["Size"] == 1
    assert [a["InstanceId"] for a in volumes[0]["Attachments"]] == [old_id]
    home = cloud.emulator.volumes_dir / volume_id
    assert Path(read_info(home)["cwd"]) == home
    (home / "notes.txt").write_text("kept on the volume\n")

    # Out of band, as an admin or AWS might; the user comes back later.
    client.terminate_instances(InstanceIds=[old_id])
    wait_until(lambda: old_id not in cloud.emulator.machines, 15, "the old machine to halt")

    second = make_spawner(cloud, user, user_home_ebs_size=1)
    second.load_state(first.get_state())
    events: list[dict[str, Any]] = []
    url = await start_watched(second, events)

    new_id = second.instance_id
    assert new_id and new_id != old_id
    states = {i["InstanceId"]: i["State"]["Name"] for i in cloud.instances(user)}
    assert states == {old_id: "terminated", new_id: "running"}
    found = messages(events)
    assert in_order(found, [f"Launching your instance ({INSTANCE_TYPE})", "Starting Jupyter"])
    volume = client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert [a["InstanceId"] for a in volume["Attachments"]] == [new_id]
    new_ip = client.describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0][
        "PrivateIpAddress"
    ]
    assert url == f"http://{new_ip}:{NOTEBOOK_PORT}"
    info = read_info(home)
    assert Path(info["cwd"]) == home
    assert "notes.txt" in info["files"]
    assert (home / "notes.txt").read_text() == "kept on the volume\n"
    # Still one home volume for the user.
    again = client.describe_volumes(
        Filters=[
            {"Name": f"tag:{ROLE_TAG}", "Values": [Role.HOME.value]},
            {"Name": f"tag:{USER_TAG}", "Values": [user]},
        ]
    )["Volumes"]
    assert [v["VolumeId"] for v in again] == [volume_id]
    # The new instance has its own pin; the terminated one's was dropped with it.
    pins = cloud.pins()
    assert new_id in pins and old_id not in pins


# --------------------------------------------------------------------------- 6. Jupyter fails


async def test_jupyter_failure_shows_the_tail_of_its_log(cloud: Cloud) -> None:
    user = cloud.new_user("fails")
    spawner = make_spawner(cloud, user, cmd=[sys.executable, str(cloud.failing_server)])

    with pytest.raises(SpawnError, match="boom: bad config") as failure:
        await start_watched(spawner, [])

    instance_id = only_instance(cloud, user)["InstanceId"]
    assert instance_id in str(failure.value)
    log = cloud.worker_log(instance_id, user).read_text()
    assert "boom: bad config" in log


# --------------------------------------------------------------------------- 7. hang


async def test_unreachable_instance_is_restarted_once_then_fails(cloud: Cloud) -> None:
    user = cloud.new_user("hung")
    # EC2 says running, but nothing answers on the port the spawner uses.
    spawner = make_spawner(cloud, user, ssh_port=free_port())
    fleet_ec2 = spawner.ec2
    calls = ApiCalls(fleet_ec2.client)
    events: list[dict[str, Any]] = []

    with pytest.raises(SpawnError, match="SSH") as failure:
        await start_watched(spawner, events)

    assert "after a restart" in str(failure.value)
    found = messages(events)
    restart = "Your instance is not responding; restarting it once"
    assert found.count(restart) == 1, found
    assert in_order(found, ["Connecting", restart, "Connecting"]), found
    delta = dict(calls)
    assert delta.get("StopInstances") == 1
    assert delta.get("StartInstances") == 1
    assert delta.get("RunInstances") == 1
    inst = only_instance(cloud, user)
    assert inst["State"]["Name"] != "terminated"


async def test_instance_whose_sshd_died_recovers_after_one_restart(cloud: Cloud) -> None:
    user = cloud.new_user("wedged")
    first = make_spawner(cloud, user)
    await start_watched(first, [])
    instance_id = first.instance_id
    assert instance_id
    machine = cloud.emulator.machines[instance_id]
    assert machine.sshd is not None
    machine.sshd.terminate()  # the instance still runs, but SSH is gone
    machine.sshd.wait(timeout=10)

    second = make_spawner(cloud, user)
    second.load_state(first.get_state())
    fleet_ec2 = second.ec2

    def machine_down_before_start(params: dict[str, Any], **_: Any) -> None:
        # On EC2 'stopped' means the machine is down. moto stops instantly and the
        # emulator only looks every 0.5 s, so a quick stop+start would never reboot
        # the machine (see the report): hold StartInstances until it halted.
        for iid in params.get("InstanceIds", []):
            wait_until(lambda i=iid: i not in cloud.emulator.machines, 15, "the machine to halt")

    fleet_ec2.client.meta.events.register(
        "before-parameter-build.ec2.StartInstances", machine_down_before_start
    )
    calls = ApiCalls(fleet_ec2.client)
    events: list[dict[str, Any]] = []
    url = await start_watched(second, events)

    found = messages(events)
    assert found.count("Your instance is not responding; restarting it once") == 1, found
    inst = only_instance(cloud, user)
    assert inst["InstanceId"] == instance_id
    assert url == f"http://{inst['PrivateIpAddress']}:{NOTEBOOK_PORT}"
    assert calls["StopInstances"] == 1
    assert calls["StartInstances"] == 1


# --------------------------------------------------------------------------- 8. host key


def other_host_key(tmp_path: Path) -> str:
    key = tmp_path / "impostor_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True
    )
    return key.with_suffix(".pub").read_text().strip()


async def test_wrong_console_host_key_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    user = cloud.new_user("mitm")
    inst = cloud.ec2.launch_worker(user, cloud.spec, launch_token(CLUSTER, user, None))
    wait_until(lambda: inst.id in cloud.emulator.machines, 15, "the emulator to boot it")
    wrong = other_host_key(tmp_path)
    motoserver.set_console_output(inst.id, f"{CONSOLE_BEGIN}\n{wrong}\n{CONSOLE_END}\n")

    spawner = make_spawner(cloud, user)
    with pytest.raises(SpawnError, match="host key") as failure:
        await start_watched(spawner, [])

    assert spawner.instance_id == inst.id
    assert spawner.pinned_host_keys == [" ".join(wrong.split()[:2])]
    assert "does not match" in str(failure.value) or "did not pin" in str(failure.value)
    # No command ran: no login, no agent log, no server.
    assert "Accepted" not in cloud.sshd_log(inst.id).read_text()
    assert not cloud.worker_log(inst.id, user).exists()
    assert not (cloud.home(inst.id, user) / INFO_FILE).exists()
    assert [i["InstanceId"] for i in cloud.instances(user)] == [inst.id]


def _ssh(cloud: Cloud, ip: str, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            *("-i", str(key), "-p", str(cloud.ssh_port)),
            *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            f"{getpass.getuser()}@{ip}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_key_pair_the_local_cloud_did_not_make_is_not_trusted(
    cloud: Cloud, tmp_path: Path
) -> None:
    """An instance launched with a key pair that reached EC2 without the local cloud's
    credentials runs, but its machine does not let that key in."""
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.import_key_pair("stranger", key.with_suffix(".pub").read_bytes(), {})
    user = cloud.new_user("stranger")
    spec = dataclasses.replace(cloud.spec, key_name="stranger")
    inst = cloud.ec2.launch_worker(user, spec, launch_token(CLUSTER, user, None))
    try:
        wait_until(lambda: inst.id in cloud.emulator.machines, 15, "the emulator to boot it")
        ip = cloud.emulator.machines[inst.id].ip
        wait_until(lambda: tcp_open(ip, cloud.ssh_port), 15, "its sshd")

        refused = _ssh(cloud, ip, key)

        assert refused.returncode == 255 and "Permission denied" in refused.stderr
        # Control: the same machine would let in the key the local cloud imported.
        trusted = cloud.state_dir / "keys" / "worker_key"
        (cloud.root(inst.id) / "etc" / "ssh" / "authorized_keys").write_text(
            trusted.with_suffix(".pub").read_text()
        )
        assert _ssh(cloud, ip, trusted).returncode == 0
    finally:
        cloud.ec2.terminate([inst.id])


async def test_changed_host_key_of_a_known_instance_is_refused(cloud: Cloud) -> None:
    user = cloud.new_user("rekeyed")
    first = make_spawner(cloud, user)
    await start_watched(first, [])
    instance_id = first.instance_id
    assert instance_id
    await first.stop()
    wait_until(lambda: instance_id not in cloud.emulator.machines, 15, "the machine to halt")
    # The disk now carries another host key; the next boot publishes that one.
    for key in (cloud.root(instance_id) / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    log = cloud.worker_log(instance_id, user)
    starts_before = log.read_text().count("cloudjhub-worker: starting server")
    accepted_before = cloud.sshd_log(instance_id).read_text().count("Accepted")

    second = make_spawner(cloud, user)
    second.load_state(first.get_state())
    with pytest.raises(SpawnError, match="host key"):
        await start_watched(second, [])

    assert log.read_text().count("cloudjhub-worker: starting server") == starts_before
    assert cloud.sshd_log(instance_id).read_text().count("Accepted") == accepted_before


@contextlib.contextmanager
def keys_on_console_once(cloud: Cloud) -> Iterator[None]:
    """As on AWS: cloud-init prints the host keys on an instance's first boot only."""
    cloud.emulator.host_keys_once = True
    try:
        yield
    finally:
        cloud.emulator.host_keys_once = False


async def started_then_stopped(cloud: Cloud, user: str) -> InstanceSpawner:
    first = make_spawner(cloud, user)
    await start_watched(first, [])
    instance_id = first.instance_id
    assert instance_id
    await first.stop()
    wait_until(lambda: instance_id not in cloud.emulator.machines, 15, "the machine to halt")
    # What the latest console shows of a stopped instance: nothing of its last boot.
    motoserver.set_console_output(instance_id, "")
    return first


async def test_a_lost_hub_database_does_not_lock_the_user_out(cloud: Cloud) -> None:
    """A new spawner with no state, an instance whose console no longer shows its keys
    (a stop/start on AWS): the keys come from the hub's store, not the console."""
    user = cloud.new_user("amnesia")
    with keys_on_console_once(cloud):
        first = await started_then_stopped(cloud, user)
        instance_id = first.instance_id
        assert instance_id

        fresh = make_spawner(cloud, user, host_key_timeout=2.0)
        fresh.load_state({})
        url = await start_watched(fresh, [])

    console = cloud.ec2.console_output(instance_id, INSTANCE_TYPE)
    assert "keys-to-console already ran" in console
    assert remote.parse_console_host_keys(console) == []
    assert fresh.instance_id == instance_id
    assert http_get(url + "/") == "fake jupyter"
    assert fresh.pinned_host_keys == first.pinned_host_keys == cloud.pins()[instance_id]
    await fresh.stop()


async def test_a_lost_hub_database_does_not_turn_a_key_change_into_a_new_pin(
    cloud: Cloud,
) -> None:
    """Without its state, the spawner would learn whatever key the console shows now;
    the store still knows the instance's first key, so the changed one is refused."""
    user = cloud.new_user("rekeyedlost")
    first = await started_then_stopped(cloud, user)
    instance_id = first.instance_id
    assert instance_id
    for key in (cloud.root(instance_id) / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    accepted_before = cloud.sshd_log(instance_id).read_text().count("Accepted")

    fresh = make_spawner(cloud, user)
    fresh.load_state({})
    with pytest.raises(SpawnError, match="host key"):
        await start_watched(fresh, [])

    assert cloud.sshd_log(instance_id).read_text().count("Accepted") == accepted_before
    assert cloud.pins()[instance_id] == first.pinned_host_keys
    await fresh.stop()


async def test_known_hosts_source_waits_for_the_new_instances_key(
    cloud: Cloud, tmp_path: Path
) -> None:
    """SSH_HOST_KEY_SOURCE=known_hosts: the file (here, not there yet at all) gets the
    new instance's key a little after it runs, as an admin's tooling would add it."""
    user = cloud.new_user("known")
    known_hosts = tmp_path / "admin_known_hosts"
    spawner = make_spawner(
        cloud, user, ssh_host_key_source="known_hosts", ssh_known_hosts=str(known_hosts)
    )
    events: list[dict[str, Any]] = []
    start = asyncio.ensure_future(start_watched(spawner, events))

    def published() -> bool:
        ip = (cloud.instances(user) or [{}])[0].get("PrivateIpAddress")
        emulated = cloud.state_dir / "known_hosts"
        return bool(ip) and emulated.exists() and f"[{ip}]:" in emulated.read_text()

    while not published():
        assert not start.done(), start.exception()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the spawner is now waiting for a file that does not exist
    assert not start.done(), start.exception()
    known_hosts.write_text((cloud.state_dir / "known_hosts").read_text())

    url = await start
    assert http_get(url)
    assert "Waiting for your instance's SSH host keys" in messages(events)
    await spawner.stop()


async def test_known_hosts_without_the_key_fails_naming_the_instance(
    cloud: Cloud, tmp_path: Path
) -> None:
    user = cloud.new_user("unknown")
    known_hosts = tmp_path / "admin_known_hosts"
    known_hosts.write_text("")
    spawner = make_spawner(
        cloud,
        user,
        ssh_host_key_source="known_hosts",
        ssh_known_hosts=str(known_hosts),
        host_key_timeout=1.0,
    )
    with pytest.raises(SpawnError, match=r"no SSH host key in .*admin_known_hosts") as failure:
        await start_watched(spawner, [])
    assert spawner.instance_id and spawner.instance_id in str(failure.value)
    await spawner.stop()


# --------------------------------------------------------------------------- 9. poll


async def test_poll_follows_the_instance_state(cloud: Cloud) -> None:
    user = cloud.new_user("polled")
    spawner = make_spawner(cloud, user)
    assert await spawner.poll() == 0  # never started
    await start_watched(spawner, [])
    assert await spawner.poll() is None

    await spawner.stop()

    assert cloud.state_of(spawner.instance_id) == "stopped"
    assert await spawner.poll() == 0
    await asyncio.sleep(spawner.fleet_refresh_interval + 0.1)
    assert await spawner.poll() == 0  # also after a refresh


@contextlib.contextmanager
def emulator_paused(cloud: Cloud) -> Iterator[None]:
    """Keep the emulator from booting machines: poll() must not need them."""
    emulator = cloud.emulator
    emulator.reconcile = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del emulator.reconcile


async def test_many_polls_share_one_describe_and_never_ssh(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [cloud.new_user("many") for _ in range(30)]
    ssh_calls: list[str] = []

    def no_ssh(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            ssh_calls.append(name)
            raise AssertionError(f"poll() used SSH ({name})")

        return refuse

    with emulator_paused(cloud):
        ids = {
            u: cloud.ec2.launch_worker(u, cloud.spec, launch_token(CLUSTER, u, None)).id
            for u in users
        }
        try:
            stopped = set(users[::3])
            cloud.client().stop_instances(InstanceIds=[ids[u] for u in stopped])
            spawners = []
            for u in users:
                sp = make_spawner(cloud, u)
                sp.load_state({"instance_id": ids[u]})
                spawners.append(sp)
            monkeypatch.setattr(remote, "run", no_ssh("remote.run"))
            monkeypatch.setattr(remote, "tcp_open", no_ssh("remote.tcp_open"))
            monkeypatch.setattr(paramiko.SSHClient, "connect", no_ssh("SSHClient.connect"))
            ec2 = spawners[0].ec2
            assert all(sp.ec2 is ec2 for sp in spawners)  # one shared fleet view
            await spawners[0].fleet.refresh()
            await asyncio.sleep(spawners[0].fleet_refresh_interval + 0.1)  # let it go stale
            calls = ApiCalls(ec2.client)

            results = await asyncio.gather(*(sp.poll() for sp in spawners))

            assert calls["DescribeInstances"] == 1
            expected = [0 if u in stopped else None for u in users]
            assert results == expected
            assert ssh_calls == []
            # And again while the view is fresh: no EC2 call at all.
            again = await asyncio.gather(*(sp.poll() for sp in spawners))
            assert again == expected
            assert calls["DescribeInstances"] == 1
        finally:
            cloud.client().terminate_instances(InstanceIds=list(ids.values()))


# --------------------------------------------------------------------------- 10. capacity


async def test_capacity_error_tells_the_user_to_try_later(cloud: Cloud) -> None:
    user = cloud.new_user("full")
    spawner = make_spawner(cloud, user)
    refused: list[str] = []

    def no_capacity(**_: Any) -> None:
        refused.append("RunInstances")
        raise ClientError(
            {
                "Error": {
                    "Code": "InsufficientInstanceCapacity",
                    "Message": "We currently do not have sufficient t3.medium capacity.",
                }
            },
            "RunInstances",
        )

    spawner.ec2.client.meta.events.register("before-call.ec2.RunInstances", no_capacity)
    events: list[dict[str, Any]] = []
    with pytest.raises(SpawnError, match=r"(?i)try again") as failure:
        await start_watched(spawner, events)

    assert refused == ["RunInstances"]
    assert "capacity" in str(failure.value)
    assert INSTANCE_TYPE in str(failure.value)
    assert cloud.instances(user) == []
    # A failed spawn never claims to be done: JupyterHub shows the error instead.
    assert all(e["progress"] < 100 for e in events)


# --------------------------------------------------------------------------- 5b. replaced twice


async def test_every_replacement_is_a_new_launch_request(cloud: Cloud) -> None:
    """RunInstances is idempotent per ClientToken: on AWS, re-sending the token of an
    earlier launch returns that (terminated) instance instead of a new one. So each
    replacement of a terminated instance must send a token never sent before."""
    user = cloud.new_user("again")
    tokens: list[str] = []
    state: dict[str, Any] = {}
    launched: list[str] = []
    for round_ in range(3):
        spawner = make_spawner(cloud, user)
        if round_ == 0:
            spawner.ec2.client.meta.events.register(
                "before-parameter-build.ec2.RunInstances",
                lambda params, **_: tokens.append(params["ClientToken"]),
            )
        spawner.load_state(state)
        await start_watched(spawner, [])
        assert spawner.instance_id and spawner.instance_id not in launched
        launched.append(spawner.instance_id)
        state = spawner.get_state()
        if round_ < 2:  # terminated out of band, later the user comes back
            old = spawner.instance_id
            cloud.client().terminate_instances(InstanceIds=[old])
            wait_until(lambda i=old: i not in cloud.emulator.machines, 15, "the machine to halt")

    assert len(tokens) == 3
    assert len(set(tokens)) == 3, f"a replacement re-sent an earlier ClientToken: {tokens}"


# --------------------------------------------------------------------------- 5c. vanished


async def test_an_instance_aws_no_longer_lists_is_replaced(cloud: Cloud) -> None:
    """AWS forgets terminated instances after about an hour: looking one up by id
    must read as "gone", and stopping it must be a no-op, never an error."""
    user = cloud.new_user("vanished")
    spawner = make_spawner(cloud, user)
    spawner.load_state({"instance_id": "i-0fedcba9876543210"})  # never existed here
    await spawner.stop()  # nothing to stop: no error
    url = await start_watched(spawner, [])
    inst = only_instance(cloud, user)
    assert spawner.instance_id == inst["InstanceId"] != "i-0fedcba9876543210"
    assert url.startswith(f"http://{inst['PrivateIpAddress']}:")
    await spawner.stop()
