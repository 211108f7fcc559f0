"""The embedded local cloud: a prepared VPC on loopback inside an EC2 endpoint.

The VPC is 127.0.0.0/16, so instance private IPs are loopback addresses the
fleet emulator can bind: the spawner's code is the same here and on AWS.
"""

from __future__ import annotations

import getpass
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from ..aws.backups import DEFAULT_BACKUP_ROLE, Backups, policy_details, role_arn
from ..aws.local import LocalCloudEc2, ensure_instance_profile
from ..config import ServerConfig, server_config_from, write_server_config
from ..keys import ensure_ed25519
from ..launch.cluster import PREINSTALLED_TAG
from ..launch.groups import ensure_security_groups
from ..launch.image import build_worker_image
from ..shared_folder import SharedSettings
from .shared_dirs import ensure_local_shared

VPC_CIDR = "127.0.0.0/16"
LOCAL_TAG = {"cloudjhub:local": "true"}
KEY_NAME = "cloudjhub-local"
INSTANCE_PROFILE = "cloudjhub-local-manager"
WORKER_INSTANCE_TYPE = "t3.medium"


@dataclass(frozen=True)
class LocalNetwork:
    endpoint: str
    region: str
    vpc_id: str
    public_subnet: str
    private_subnet: str
    base_ami: str
    key_name: str
    key_file: Path
    instance_profile: str


def ensure_key_file(state_dir: Path) -> Path:
    """An ed25519 key made here; only its public half goes to EC2."""
    key = state_dir / "keys" / "worker_key"
    ensure_ed25519(key, "cloudjhub-local")
    return key


def subnet_cidrs(vpc_cidr: str) -> tuple[str, str]:
    """(public /24, private /20) inside a loopback /16."""
    net = ipaddress.ip_network(vpc_cidr)
    if net.prefixlen != 16 or not net.is_loopback:
        raise ValueError(f"--vpc-cidr {vpc_cidr}: must be a /16 inside 127.0.0.0/8")
    base = int(net.network_address)
    public = ipaddress.ip_network((base + (1 << 8), 24))
    private = ipaddress.ip_network((base + (16 << 8), 20))
    return str(public), str(private)


def prepare_network(
    ec2: LocalCloudEc2, endpoint: str, region: str, state_dir: Path, vpc_cidr: str = VPC_CIDR
) -> LocalNetwork:
    """What an AWS account would already have: VPC, subnets, gateway, key, base image."""
    public_cidr, private_cidr = subnet_cidrs(vpc_cidr)
    vpc = ec2.ensure_vpc(vpc_cidr, {**LOCAL_TAG, "Name": "cloudjhub-local"})
    public = ec2.ensure_subnet(vpc, public_cidr, {**LOCAL_TAG, "Name": "cloudjhub-local-public"})
    private = ec2.ensure_subnet(vpc, private_cidr, {**LOCAL_TAG, "Name": "cloudjhub-local-private"})
    ec2.ensure_internet_route(vpc, public, {**LOCAL_TAG, "Name": "cloudjhub-local-igw"})
    key_file = ensure_key_file(state_dir)
    public_key = key_file.with_suffix(".pub").read_text().strip()
    ec2.import_key_pair(KEY_NAME, public_key, LOCAL_TAG)
    # x86_64, as the instance types the local cloud launches (t3) run: on AWS those
    # cannot boot an arm64 image, and the launcher's preflight says so.
    images = sorted(
        (
            i
            for i in ec2.public_images()
            if i.get("State") == "available" and i.get("Architecture") == "x86_64"
        ),
        key=lambda i: i["ImageId"],
    )
    if not images:
        raise RuntimeError(f"the EC2 endpoint {endpoint} offers no public image to start from")
    base_ami = images[0]["ImageId"]
    # Emulated machines run this very installation: nothing to install on them.
    ec2.tag_resource(base_ami, {PREINSTALLED_TAG: str(Path(sys.executable).parent)})
    profile = ensure_instance_profile(INSTANCE_PROFILE, region, endpoint)
    return LocalNetwork(
        endpoint, region, vpc, public, private, base_ami, KEY_NAME, key_file, profile
    )


def prepare_demo_cluster(
    ec2: LocalCloudEc2,
    net: LocalNetwork,
    state_dir: Path,
    ssh_port: int,
    idle_timeout: int,
    host_key_source: str,
    progress: object = print,
    hibernate: bool = False,
    user_home_ebs_size: int = 0,
    shared: SharedSettings | None = None,
) -> Path:
    """Security groups and worker image with the launcher's code, then server_config.json."""
    groups = ensure_security_groups(ec2, net.vpc_id, ssh_port=ssh_port)
    shared_keys: dict[str, object] = {}
    if shared is not None:
        say = progress if callable(progress) else None
        fs_id = ensure_local_shared(
            ec2, net.vpc_id, net.private_subnet, groups.worker, state_dir, say
        )
        shared_keys = {
            "SHARED_STORAGE": shared.storage,
            "SHARED_FILE_SYSTEM_ID": fs_id,
            "SHARED_COURSE": shared.course,
            "SHARED_DROPBOX": shared.dropbox,
        }
    image = build_worker_image(
        ec2,
        net.base_ami,
        WORKER_INSTANCE_TYPE,
        net.private_subnet,
        [groups.worker],
        net.key_name,
        progress=progress,  # type: ignore[arg-type]
        poll=0.2,
    )
    config: ServerConfig = server_config_from(
        {
            "CLUSTER_NAME": ec2.cluster,
            "REGION": net.region,
            "WORKER_AMI": image,
            "SUBNET_ID": net.private_subnet,
            "WORKER_SECURITY_GROUPS": [groups.worker],
            "KEY_NAME": net.key_name,
            "HIBERNATE": hibernate,
            "WORKER_INSTANCE_TYPE": WORKER_INSTANCE_TYPE,
            "WORKER_EBS_SIZE": 8,
            "USER_HOME_EBS_SIZE": user_home_ebs_size,
            "JUPYTER_NOTEBOOK_TIMEOUT": idle_timeout,
            "MANAGER_IP": "127.0.0.1",
            "WORKER_USERNAME": getpass.getuser(),
            "SSH_KEY_FILE": str(net.key_file),
            "SSH_PORT": ssh_port,
            "SSH_HOST_KEY_SOURCE": host_key_source,
            "SSH_KNOWN_HOSTS": str(state_dir / "known_hosts"),
            "AWS_ENDPOINT_URL": net.endpoint,
            **shared_keys,
        }
    )
    return write_server_config(config, state_dir / "server_config.json")


def ensure_demo_backups(ec2: LocalCloudEc2, schedule: str, retain: int, homes: bool) -> str:
    """The demo cluster's DLM policy, as `launch --backup-schedule` makes it."""
    backups = Backups.connect(ec2, None, None)
    role = role_arn(None, None, DEFAULT_BACKUP_ROLE)
    return backups.ensure_policy(role, policy_details(ec2.cluster, homes, schedule, retain))
