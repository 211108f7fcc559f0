"""Fixtures for the unit tests: an in-process moto EC2 and an SSH key pair.

Everything AWS-shaped runs against moto's in-memory backend (``mock_aws``) with
AMI, key pair and instance type validation switched on, so a launch that names
something that does not exist fails as it would on AWS.
"""

from __future__ import annotations

import functools
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto import settings as moto_settings
from moto.ec2.models import amis as moto_amis
from moto.utilities.utils import load_resource
from werkzeug.serving import make_server

from cloudjhub.aws.client import RETRY_CONFIG, Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.local import filters, motoserver
from cloudjhub.local.dlm import DlmApi
from cloudjhub.tags import CLUSTER_TAG, Role, tags_for
from tests.helpers import ApiCalls

REGION = "us-east-1"
CLUSTER = "alpha"
OTHER_CLUSTER = "beta"
KEY_NAME = "alpha-worker-key"


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: str


@dataclass(frozen=True)
class Network:
    vpc_id: str
    subnet_id: str


def ssh_keygen(path: Path, kind: str = "ed25519") -> SshKey:
    """A fresh OpenSSH key pair at `path` (private) and `path`.pub."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)],
        check=True,
    )
    return SshKey(path, path.with_suffix(".pub").read_text().strip())


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    """A real ed25519 client key, generated once per session."""
    return ssh_keygen(tmp_path_factory.mktemp("client-key") / "id_ed25519")


@pytest.fixture(scope="session")
def moto_amis_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """moto's own built-in public images (44 of them) as a MOTO_AMIS_PATH file.

    With MOTO_AMIS_PATH set, moto skips its ~1,250 per-region "latest" images,
    which it would otherwise rebuild for every test (about 0.3 s each time).
    """
    path = tmp_path_factory.mktemp("moto") / "amis.json"
    path.write_text(json.dumps(load_resource("ec2/resources/amis.json")))
    return path


@pytest.fixture(scope="session")
def local_dlm() -> Iterator[tuple[DlmApi, str]]:
    """The local cloud's DLM API on loopback, for the whole session: moto has no DLM,
    and a DLM call must never leave the machine."""
    api = DlmApi()
    server = make_server("127.0.0.1", 0, api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def aws(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    moto_amis_file: Path,
    local_dlm: tuple[DlmApi, str],
) -> Iterator[None]:
    """Fake credentials, validation on, no endpoint override, and moto in-process."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECURITY_TOKEN",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("MOTO_ENABLE_AMI_VALIDATION", "true")
    monkeypatch.setenv("MOTO_ENABLE_KEYPAIR_VALIDATION", "true")
    monkeypatch.setenv("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
    # AWS's managed policies cost seconds to load: only tests that attach one load them.
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")
    # Never read a developer's real AWS configuration or endpoint.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE", "AWS_ENDPOINT_URL_DLM"):
        monkeypatch.delenv(var, raising=False)
    # moto reads these switches once, at import; set the parsed values too.
    monkeypatch.setattr(moto_settings, "ENABLE_AMI_VALIDATION", True)
    monkeypatch.setattr(moto_settings, "ENABLE_KEYPAIR_VALIDATION", True)
    monkeypatch.setattr(moto_settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    monkeypatch.setenv("MOTO_AMIS_PATH", str(moto_amis_file))
    monkeypatch.setattr(moto_amis, "AMIS", json.loads(moto_amis_file.read_text()))
    filters.install()  # match filter values as AWS does, as the local cloud does
    motoserver.patch_run_instances()  # and launch MaxCount, as it does
    local_dlm[0].policies.clear()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DLM", local_dlm[1])
    with mock_aws():
        yield


@functools.cache
def _boto_session() -> boto3.session.Session:
    # make_client() builds a new session, and so reloads the EC2 service model,
    # every time (~0.3 s); tests share one session, with the same retry config.
    return boto3.session.Session()


def ec2_client() -> Any:
    """An EC2 client configured like `make_client`, from a shared session."""
    return _boto_session().client("ec2", region_name=REGION, config=RETRY_CONFIG)


@pytest.fixture
def alpha_client(aws: None) -> Any:
    return ec2_client()


@pytest.fixture
def calls(alpha_client: Any) -> ApiCalls:
    """The EC2 calls made through the `ec2` fixture, counted from its creation."""
    return ApiCalls(alpha_client)


@pytest.fixture
def ec2(alpha_client: Any, calls: ApiCalls) -> LocalCloudEc2:
    """LocalCloudEc2 for cluster `alpha` against the moto backend."""
    return LocalCloudEc2(CLUSTER, alpha_client)


@pytest.fixture
def other_ec2(aws: None) -> LocalCloudEc2:
    """LocalCloudEc2 for another cluster (`beta`) sharing the same moto backend."""
    return LocalCloudEc2(OTHER_CLUSTER, ec2_client())


@pytest.fixture
def network(ec2: LocalCloudEc2) -> Network:
    tags = {CLUSTER_TAG: CLUSTER, "Name": f"{CLUSTER}-net"}
    vpc_id = ec2.ensure_vpc("10.42.0.0/16", tags)
    subnet_id = ec2.ensure_subnet(vpc_id, "10.42.1.0/24", tags)
    return Network(vpc_id, subnet_id)


@pytest.fixture
def key_name(ec2: LocalCloudEc2, ssh_key: SshKey) -> str:
    ec2.import_key_pair(KEY_NAME, ssh_key.public, {CLUSTER_TAG: CLUSTER})
    return KEY_NAME


_AMI_CACHE: dict[str, str] = {}


@pytest.fixture
def worker_ami(ec2: LocalCloudEc2) -> str:
    """One of moto's built-in public images (the same ids every run), preferring Ubuntu."""
    if "ami" not in _AMI_CACHE:
        images = [i for i in ec2.public_images() if i.get("State") == "available"]
        assert images, "moto has no built-in public images"
        ubuntu = [i for i in images if "ubuntu" in i.get("Name", "").lower()]
        _AMI_CACHE["ami"] = (ubuntu or images)[0]["ImageId"]
    return _AMI_CACHE["ami"]


@pytest.fixture
def worker_group(ec2: LocalCloudEc2, network: Network) -> str:
    name = f"{CLUSTER}-worker"
    group_id, _ = ec2.ensure_security_group(
        network.vpc_id, name, "workers", tags_for(CLUSTER, Role.WORKER, name=name)
    )
    return group_id


@pytest.fixture
def spec(network: Network, key_name: str, worker_ami: str, worker_group: str) -> WorkerSpec:
    return WorkerSpec(
        image_id=worker_ami,
        instance_type="t3.medium",
        subnet_id=network.subnet_id,
        security_group_ids=(worker_group,),
        key_name=key_name,
        ebs_size=20,
    )


@pytest.fixture
def make_worker(ec2: LocalCloudEc2, spec: WorkerSpec) -> Callable[..., Instance]:
    """Launch a worker for `user` (in `cluster_ec2`'s cluster, default `alpha`)."""

    def launch(user: str, cluster_ec2: LocalCloudEc2 | None = None) -> Instance:
        target = cluster_ec2 or ec2
        return target.launch_worker(user, spec, f"test-{uuid.uuid4().hex}")

    return launch


@pytest.fixture
def make_untagged(ec2: LocalCloudEc2, spec: WorkerSpec) -> Callable[[], str]:
    """Run an instance with no cloudjhub tags at all (someone else's)."""

    def launch() -> str:
        reply = ec2.client.run_instances(
            ImageId=spec.image_id,
            InstanceType=spec.instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=spec.subnet_id,
            KeyName=spec.key_name,
        )
        return reply["Instances"][0]["InstanceId"]

    return launch
