"""The launcher end to end against `cloudjhub demo --cloud-only`: moto with
validation on, the fleet emulator with a real sshd per instance, and a real
JupyterHub started on the emulated manager by the launcher's setup step."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from cloudjhub.aws.client import Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.config import InstanceConfig
from cloudjhub.launch.cluster import Launch, LaunchError
from cloudjhub.launch.options import LaunchOptions
from tests.helpers import inventory, self_signed_pair
from tests.system.lti_platform import lti13_sign_in
from tests.system.school_signin import school_sign_in

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("cloudjhub")
VPC_CIDR = "127.202.0.0/16"


@dataclass
class Cloud:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    env: dict[str, str]

    def ec2(self) -> Any:
        return boto3.client(
            "ec2",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def launch(
        self, *args: str, cwd: Path, cmd: list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        base = cmd or [str(CLI), "launch"]
        return subprocess.run(
            [*base, *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=600
        )

    def inventory(self) -> dict[str, Any]:
        return inventory(self.ec2(), live_only=True)

    def args(self, cluster: str) -> list[str]:
        e = self.env
        return [
            cluster,
            e["CLOUDJHUB_BASE_AMI"],
            e["CLOUDJHUB_PRIVATE_SUBNET"],
            e["CLOUDJHUB_PUBLIC_SUBNET"],
        ]


@contextlib.contextmanager
def local_cloud(state_dir: Path, vpc_cidr: str, *extra: str) -> Iterator[Cloud]:
    """`cloudjhub demo --cloud-only` (with `extra` options) until the block ends."""
    out = open(state_dir / "cloud.out", "w+")  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDJHUB_"))}
    proc = subprocess.Popen(
        [
            str(CLI),
            "demo",
            "--cloud-only",
            "--state-dir",
            str(state_dir),
            "--vpc-cidr",
            vpc_cidr,
            *extra,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    exports: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while "CLOUDJHUB_INSTANCE_PROFILE" not in exports:
        assert proc.poll() is None and time.monotonic() < deadline, (
            state_dir / "cloud.out"
        ).read_text()
        time.sleep(0.2)
        for line in (state_dir / "cloud.out").read_text().splitlines():
            if line.startswith("export "):
                name, _, value = line[len("export ") :].partition("=")
                exports[name] = shlex.split(value)[0]
    try:
        yield Cloud(proc, state_dir, {**env, **exports})
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=90)
        out.close()
        assert status == 0, (state_dir / "cloud.out").read_text()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with local_cloud(tmp_path_factory.mktemp("cloud"), VPC_CIDR) as running:
        yield running


def test_cloud_only_prints_the_promised_exports(cloud: Cloud) -> None:
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "CLOUDJHUB_BASE_AMI",
        "CLOUDJHUB_PRIVATE_SUBNET",
        "CLOUDJHUB_PUBLIC_SUBNET",
        "CLOUDJHUB_KEY_NAME",
        "CLOUDJHUB_KEY_FILE",
        "CLOUDJHUB_INSTANCE_PROFILE",
    ):
        assert cloud.env.get(name), name
    assert cloud.env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


PREFLIGHT_CASES = [
    (
        "no such subnet",
        {"private": "subnet-0000000000000dead"},
        "PRIVATE_SUBNET subnet-0000000000000dead",
    ),
    ("private used as public", {"public": "$PRIVATE"}, "PUBLIC_SUBNET"),
    ("public without internet route", {"public": "$OTHER"}, "internet gateway"),
    ("no such image", {"ami": "ami-00000000000000bad"}, "BASE_AMI ami-00000000000000bad"),
    ("no such key pair", {"opts": ["--key-name", "nope"]}, "--key-name nope"),
    ("no such profile", {"opts": ["--instance-profile", "nope"]}, "--instance-profile nope"),
    (
        "bad instance type",
        {"opts": ["--worker-instance-type", "t9.huge"]},
        "--worker-instance-type t9.huge",
    ),
    ("ebs too small", {"opts": ["--worker-ebs-size", "7"]}, "WORKER_EBS_SIZE"),
    ("bad cluster name", {"cluster": "Bad_Name"}, "cluster name 'Bad_Name'"),
    (
        "bad custom ami",
        {"opts": ["--custom-worker-ami", "ami-0000000000000beef"]},
        "--custom-worker-ami",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "expected"), PREFLIGHT_CASES, ids=[c[0] for c in PREFLIGHT_CASES]
)
def test_each_preflight_failure_creates_nothing(
    cloud: Cloud, tmp_path: Path, case: str, change: dict[str, Any], expected: str
) -> None:
    args = cloud.args(change.get("cluster", "pre"))
    if "private" in change:
        args[2] = change["private"]
    if change.get("public") == "$PRIVATE":
        args[3] = cloud.env["CLOUDJHUB_PRIVATE_SUBNET"]
    elif change.get("public") == "$OTHER":
        args[3] = _subnet_without_internet(cloud)
    if "ami" in change:
        args[1] = change["ami"]
    before = cloud.inventory()
    done = cloud.launch(*args, *change.get("opts", []), "--allow-http", "--yes", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    assert cloud.inventory() == before
    assert not (tmp_path / "server_config.json").exists()


def _subnet_without_internet(cloud: Cloud) -> str:
    """A second subnet of the VPC, on the main route table (no internet gateway)."""
    ec2 = cloud.ec2()
    vpc = ec2.describe_subnets(SubnetIds=[cloud.env["CLOUDJHUB_PUBLIC_SUBNET"]])["Subnets"][0][
        "VpcId"
    ]
    found = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["127.202.200.0/24"]}])
    if found["Subnets"]:
        return str(found["Subnets"][0]["SubnetId"])
    return str(ec2.create_subnet(VpcId=vpc, CidrBlock="127.202.200.0/24")["Subnet"]["SubnetId"])


def test_key_file_must_be_private(cloud: Cloud, tmp_path: Path) -> None:
    loose = tmp_path / "key"
    loose.write_bytes(Path(cloud.env["CLOUDJHUB_KEY_FILE"]).read_bytes())
    loose.chmod(0o644)
    before = cloud.inventory()
    done = cloud.launch(
        *cloud.args("pre"), "--key-file", str(loose), "--allow-http", "--yes", cwd=tmp_path
    )
    assert done.returncode == 2
    assert f"--key-file {loose}: mode is 0644" in done.stderr
    assert cloud.inventory() == before


def test_dry_run_lists_everything_and_creates_nothing(cloud: Cloud, tmp_path: Path) -> None:
    before = cloud.inventory()
    done = cloud.launch(*cloud.args("dry"), "--allow-http", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for item in (
        "security group dry-manager",
        "dry-manager2",
        "dry-worker",
        "builder instance",
        "manager instance",
        "key pair dry-workers",
        "server_config.json",
    ):
        assert item in done.stderr
    assert cloud.inventory() == before


def _fail_on(ec2: LocalCloudEc2, operation: str, nth: int = 1) -> None:
    seen = {"n": 0}

    def hook(**_: Any) -> None:
        seen["n"] += 1
        if seen["n"] == nth:
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "injected"}}, operation
            )

    ec2.client.meta.events.register(f"before-call.ec2.{operation}", hook)


@pytest.mark.parametrize(
    ("step", "operation", "nth"),
    [
        ("security groups", "AuthorizeSecurityGroupIngress", 3),
        ("worker image", "CreateImage", 1),
        ("manager", "RunInstances", 2),
        ("workers' key pair", "ImportKeyPair", 1),
    ],
)
def test_failure_at_each_step_rolls_back(
    cloud: Cloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    operation: str,
    nth: int,
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cloud.env[name])
    before = cloud.inventory()
    ec2 = LocalCloudEc2.connect("rollback", "us-east-1", cloud.env["AWS_ENDPOINT_URL"])
    _fail_on(ec2, operation, nth)
    opts = _options(cloud, "rollback", tmp_path)
    said: list[str] = []
    with pytest.raises(LaunchError, match="injected"):
        Launch(ec2, opts, said.append).run()
    assert any(line.strip().startswith("rolled back") for line in said), said
    assert not any("could NOT roll back" in line for line in said), said
    assert _wait_inventory(cloud, before) == before
    assert not (tmp_path / "server_config.json").exists()


class _DeadHub(Launch):
    """The hub's address answers nothing: the health wait must time out and roll back."""

    def wait_for_hub(self, manager: Instance) -> str:
        return super().wait_for_hub(replace(manager, private_ip="127.202.255.254"))


def test_a_hub_that_never_answers_rolls_back(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cloud.env[name])
    before = cloud.inventory()
    ec2 = LocalCloudEc2.connect("nohub", "us-east-1", cloud.env["AWS_ENDPOINT_URL"])
    with pytest.raises(LaunchError, match="timed out"):
        _DeadHub(ec2, _options(cloud, "nohub", tmp_path, timeout=8), lambda _: None).run()
    assert _wait_inventory(cloud, before) == before


def _options(cloud: Cloud, cluster: str, out: Path, timeout: float = 120) -> LaunchOptions:
    e = cloud.env
    return LaunchOptions(
        cluster=cluster,
        base_ami=e["CLOUDJHUB_BASE_AMI"],
        private_subnet=e["CLOUDJHUB_PRIVATE_SUBNET"],
        public_subnet=e["CLOUDJHUB_PUBLIC_SUBNET"],
        instance=InstanceConfig(
            SERVER_USERNAME=e["CLOUDJHUB_SERVER_USERNAME"],
            WORKER_USERNAME=e["CLOUDJHUB_WORKER_USERNAME"],
        ),
        key_name=e["CLOUDJHUB_KEY_NAME"],
        key_file=Path(e["CLOUDJHUB_KEY_FILE"]),
        instance_profile=e["CLOUDJHUB_INSTANCE_PROFILE"],
        admin_cidr=e["CLOUDJHUB_ADMIN_CIDR"],
        endpoint_url=e["AWS_ENDPOINT_URL"],
        ssh_port=int(e["CLOUDJHUB_SSH_PORT"]),
        hub_port=int(e["CLOUDJHUB_HUB_PORT"]),
        connect_via="private",
        output_dir=out,
        timeout=timeout,
        poll=0.2,
    )


def rerun_reuses_everything_then_destroy_removes_it(
    cloud: Cloud, cluster: str, cwd: Path, before: dict[str, Any], options: tuple[str, ...]
) -> None:
    """A second launch of a launched cluster, with the first one's `options`, creates
    nothing; destroy then leaves the account as it was `before` the first launch."""
    after_first = cloud.inventory()
    again = cloud.launch(*cloud.args(cluster), *options, "--yes", cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert "(reused)" in again.stderr
    assert cloud.inventory() == after_first
    destroy_removes_everything(cloud, cluster, before)


def destroy_removes_everything(cloud: Cloud, cluster: str, before: dict[str, Any]) -> None:
    """`destroy` leaves the account as it was `before` the first launch."""
    gone = subprocess.run(
        [str(CLI), "destroy", cluster, "--yes"],
        env=cloud.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gone.returncode == 0, gone.stderr
    assert _wait_inventory(cloud, before) == before


def _wait_inventory(cloud: Cloud, expected: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """Instances pass through shutting-down; give the emulator a moment."""
    deadline = time.monotonic() + timeout
    while (now := cloud.inventory()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key for the hub; the test pins the certificate itself."""
    cert, key = self_signed_pair("hub.class1.test")
    cert_file, key_file = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    return cert_file, key_file


def _served_certificate(url: str) -> str:
    host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
    return ssl.get_server_certificate((host, int(port)))


def _session() -> requests.Session:
    session = requests.Session()
    session.verify = False  # self-signed for an IP; the test compares the certificate itself
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
    return session


def _post_form(
    session: requests.Session, url: str, data: dict[str, str], follow: bool = True
) -> requests.Response:
    """A form of the hub's, posted the way its page would (with the _xsrf token)."""
    page = session.get(url, timeout=30)
    xsrf = session.cookies.get("_xsrf") or re.search(
        r'name="_xsrf" value="([^"]+)"', page.text
    ).group(1)  # type: ignore[union-attr]
    return session.post(url, data={**data, "_xsrf": xsrf}, timeout=120, allow_redirects=follow)


def _sign_up(url: str, user: str, password: str) -> None:
    form = {
        "username": user,
        "signup_password": password,
        "signup_password_confirmation": password,
    }
    assert _post_form(_session(), url + "hub/signup", form).status_code == 200


def _signed_in(url: str, user: str, password: str) -> requests.Session | None:
    """A session signed in as `user`, or None if the hub refused the password."""
    session = _session()
    # Not following the redirect, which would go on to spawn the user's server.
    _post_form(session, url + "hub/login", {"username": user, "password": password}, False)
    home = session.get(url + "hub/home", timeout=30, allow_redirects=False)
    return session if home.status_code == 200 else None


def _login_and_spawn(url: str, password: str, user: str) -> float:
    session = _session()
    began = time.monotonic()
    _post_form(session, url + "hub/login", {"username": user, "password": password})
    deadline = began + 120
    while time.monotonic() < deadline:
        session.get(url + f"user/{user}/lab", timeout=60)  # completes the OAuth handshake
        status = session.get(url + f"user/{user}/api/status", timeout=30)
        if status.status_code == 200 and "started" in status.json():
            return time.monotonic() - began
        time.sleep(0.5)
    raise AssertionError(f"{user}'s notebook never answered through {url}")


def test_full_launch_then_rerun_then_destroy(cloud: Cloud, tmp_path: Path) -> None:
    before = cloud.inventory()
    cert, key = _self_signed(tmp_path)
    tls = ("--ssl-cert", str(cert), "--ssl-key", str(key))
    began = time.monotonic()
    done = cloud.launch(
        *cloud.args("class1"),
        "--yes",
        *tls,
        cwd=tmp_path,
        cmd=[sys.executable, str(ROOT / "launch_cluster" / "launch.py")],
    )
    launch_seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith("https://")
    assert ssl.DER_cert_to_PEM_cert(
        ssl.PEM_cert_to_DER_cert(_served_certificate(url))
    ) == ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    assert requests.get(url + "hub/health", timeout=10, verify=False).status_code == 200
    assert (tmp_path / "server_config.json").exists()
    assert (tmp_path / "cloudjhub-class1-resources.json").exists()

    ec2 = cloud.ec2()
    managers = ec2.describe_instances(
        Filters=[
            {"Name": "tag:cloudjhub:cluster", "Values": ["class1"]},
            {"Name": "tag:cloudjhub:role", "Values": ["manager"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (manager,) = [i for r in managers for i in r["Instances"]]
    assert manager["MetadataOptions"]["HttpTokens"] == "required"
    assert manager["IamInstanceProfile"]["Arn"].endswith(cloud.env["CLOUDJHUB_INSTANCE_PROFILE"])
    etc = cloud.state_dir / "instances" / manager["InstanceId"] / "etc" / "cloudjhub"
    for secret in (
        "cookie_secret",
        "proxy_token",
        "user_password",
        "admin_password",
        "worker_key",
        "ssl/hub.key",
    ):
        assert (etc / secret).stat().st_mode & 0o077 == 0, secret
        assert (etc / secret).read_text().strip() not in done.stdout + done.stderr

    grace = _per_user_sign_in(url, etc, tmp_path / "cloudjhub-class1-admin-password", done)
    spawn_seconds = _login_and_spawn(url, grace, "grace")
    workers = ec2.describe_instances(Filters=[{"Name": "tag:cloudjhub:user", "Values": ["grace"]}])
    (worker,) = [i for r in workers["Reservations"] for i in r["Instances"]]
    assert worker["Tags"] and "IamInstanceProfile" not in worker
    print(
        f"\nlaunch against the local cloud: {launch_seconds:.1f}s; first spawn {spawn_seconds:.1f}s"
    )
    grace_session = _signed_in(url, "grace", grace)
    assert grace_session is not None
    grace_session.get(url + "user/grace/lab", timeout=60)  # her server's OAuth handshake

    def grace_started() -> str:
        """When grace's Jupyter server started, asked through the hub's proxy as her."""
        status = grace_session.get(url + "user/grace/api/status", timeout=60)
        assert status.status_code == 200, status.status_code
        return str(status.json()["started"])

    # The re-run: with other sign-in options, it reuses everything and keeps grace's server.
    school_sign_in(
        lambda *a: cloud.launch(*cloud.args("class1"), *a, "--yes", cwd=tmp_path),
        cloud.inventory,
        tls,
        tmp_path,
        url,
        etc,
        ("grace", grace_started),
    )
    # And with a course's LTI 1.3 launch from a platform on loopback.
    lti13_sign_in(
        lambda *a: cloud.launch(*cloud.args("class1"), *a, "--yes", cwd=tmp_path),
        tls,
        url,
        etc,
        "grace",
    )
    destroy_removes_everything(cloud, "class1", before)


def _per_user_sign_in(
    url: str, etc: Path, admin_file: Path, done: subprocess.CompletedProcess[str]
) -> str:
    """The default sign-in (NativeAuthenticator) on the launched hub, through its own
    sign-up and login pages: nobody claims `admin`, a sign-up waits for an admin's
    approval, nobody signs in with a password that is not theirs. Returns the
    password of `grace`, approved."""
    assert admin_file.stat().st_mode & 0o777 == 0o600
    admin_password = admin_file.read_text().strip()
    assert admin_password == (etc / "admin_password").read_text().strip()
    assert admin_file.name in done.stderr and admin_password not in done.stdout + done.stderr

    _sign_up(url, "admin", "stranger-0wns-admin")
    assert _signed_in(url, "admin", "stranger-0wns-admin") is None

    grace, mallory = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    _sign_up(url, "grace", grace)
    _sign_up(url, "mallory", mallory)
    assert _signed_in(url, "grace", grace) is None  # not approved yet
    admin = _signed_in(url, "admin", admin_password)
    assert admin is not None
    for user in ("grace", "mallory"):
        admin.get(url + f"hub/authorize/{user}", timeout=30)  # the approval page's toggle
    assert _signed_in(url, "mallory", mallory) is not None
    shared = (etc / "user_password").read_text().strip()
    for not_hers in (mallory, shared, admin_password, "anything"):
        assert _signed_in(url, "grace", not_hers) is None
    return grace
