"""The one door to EC2.

Only this module talks to boto3. Retries and backoff come from botocore's
retry modes; every destructive action is guarded by a fresh check of the
cluster tag on each instance it names.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .tags import CLUSTER_TAG, ROLE_TAG, USER_TAG, Role, filters, tag_dict, tag_list, tags_for

RETRY_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=10,
    read_timeout=60,
)

# Shown to users on the spawn page: say what happened and what to do about it.
_USER_MESSAGES = {
    "InsufficientInstanceCapacity": (
        "AWS has no spare {instance_type} capacity in this zone right now. "
        "Try again in a few minutes; if it persists, ask your admin to pick another instance type."
    ),
    "InstanceLimitExceeded": (
        "The AWS account has reached its limit of running instances. "
        "Ask your admin to raise the EC2 limit or to stop unused servers."
    ),
    "VcpuLimitExceeded": (
        "The AWS account has reached its vCPU limit for {instance_type} instances. "
        "Ask your admin to request a higher limit."
    ),
    "InvalidAMIID.NotFound": (
        "The worker image {image} does not exist (yet). "
        "If the cluster was just launched, wait for the image to finish; otherwise tell your admin."
    ),
    "InvalidAMIID.Unavailable": (
        "The worker image {image} is not available yet. Try again in a few minutes."
    ),
    "InvalidAMIID.Malformed": "The worker image id {image!r} is not valid. Tell your admin.",
}


class CloudError(Exception):
    """An EC2 call failed; the message is fit to show a user."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class NotOurs(CloudError):
    """A destructive action named a resource not tagged for this cluster."""


@dataclass(frozen=True)
class Instance:
    id: str
    state: str
    instance_type: str
    private_ip: str | None
    launch_time: datetime | None
    availability_zone: str
    tags: dict[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()

    @property
    def user(self) -> str | None:
        return self.tags.get(USER_TAG)

    @property
    def cluster(self) -> str | None:
        return self.tags.get(CLUSTER_TAG)

    @property
    def role(self) -> str | None:
        return self.tags.get(ROLE_TAG)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Instance:
        return cls(
            id=data["InstanceId"],
            state=data["State"]["Name"],
            instance_type=data.get("InstanceType", ""),
            private_ip=data.get("PrivateIpAddress") or None,
            launch_time=data.get("LaunchTime"),
            availability_zone=data.get("Placement", {}).get("AvailabilityZone", ""),
            tags=tag_dict(data.get("Tags")),
            volumes=tuple(
                m["Ebs"]["VolumeId"] for m in data.get("BlockDeviceMappings", []) if "Ebs" in m
            ),
        )


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker launch needs, from server_config.json or traits."""

    image_id: str
    instance_type: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    key_name: str
    ebs_size: int
    hibernate: bool = False


def make_client(region: str, endpoint_url: str | None = None) -> Any:
    """An EC2 client from the standard credential chain, with adaptive retries."""
    session = boto3.session.Session()
    return session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=RETRY_CONFIG)


def launch_token(cluster: str, user: str, previous: str | None) -> str:
    """ClientToken that makes a retried RunInstances return the same instance.

    The previous instance id is part of it so that replacing a terminated
    instance is a new request, not a replay of the old one.
    """
    raw = f"{cluster}\0{user}\0{previous or ''}".encode()
    return "cjh-" + hashlib.sha256(raw).hexdigest()[:60]


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Ec2:
    """EC2 operations for one cluster."""

    def __init__(self, cluster: str, client: Any) -> None:
        self.cluster = cluster
        self.client = client
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._root_devices: dict[str, str] = {}
        client.meta.events.register("before-call.ec2.*", self._count)

    @classmethod
    def connect(cls, cluster: str, region: str, endpoint_url: str | None = None) -> Ec2:
        return cls(cluster, make_client(region, endpoint_url))

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def _call(self, action: str, context: dict[str, str] | None = None, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, action)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "Unknown")
            template = _USER_MESSAGES.get(code)
            if template:
                message = template.format(**(context or {}))
            else:
                message = f"EC2 {action} failed: {code}: {err.get('Message', '')}"
            raise CloudError(message, code) from exc
        except BotoCoreError as exc:
            raise CloudError(f"EC2 {action} failed: {exc}", type(exc).__name__) from exc

    # ---- reads -------------------------------------------------------------

    def _describe(self, **kwargs: Any) -> list[Instance]:
        out: list[Instance] = []
        token: str | None = None
        while True:
            page = self._call(
                "describe_instances", **kwargs, **({"NextToken": token} if token else {})
            )
            for reservation in page.get("Reservations", []):
                out.extend(Instance.from_api(i) for i in reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return out

    def describe_cluster(self, role: Role | None = None) -> list[Instance]:
        """All instances of this cluster (of one role), in every state."""
        return self._describe(Filters=filters(self.cluster, role), MaxResults=1000)

    def describe_workers(self, user: str | None = None) -> list[Instance]:
        return self._describe(Filters=filters(self.cluster, Role.WORKER, user), MaxResults=1000)

    def describe(self, instance_ids: Iterable[str]) -> list[Instance]:
        ids = list(instance_ids)
        out: list[Instance] = []
        for chunk in _chunks(ids, 200):
            out.extend(self._describe(InstanceIds=chunk))
        return out

    def console_output(self, instance_id: str) -> str:
        reply = self._call("get_console_output", InstanceId=instance_id, Latest=True)
        return reply.get("Output") or ""

    def root_device_name(self, image_id: str) -> str:
        if image_id not in self._root_devices:
            images = self._call("describe_images", {"image": image_id}, ImageIds=[image_id]).get(
                "Images", []
            )
            if not images:
                raise CloudError(
                    _USER_MESSAGES["InvalidAMIID.NotFound"].format(image=image_id),
                    "InvalidAMIID.NotFound",
                )
            image = images[0]
            if image.get("State") != "available":
                raise CloudError(
                    _USER_MESSAGES["InvalidAMIID.Unavailable"].format(image=image_id),
                    "InvalidAMIID.Unavailable",
                )
            self._root_devices[image_id] = image.get("RootDeviceName") or "/dev/xvda"
        return self._root_devices[image_id]

    # ---- creation ------------------------------------------------------------

    def launch_worker(self, user: str, spec: WorkerSpec, client_token: str) -> Instance:
        """Run one tagged worker: IMDSv2 only, no instance profile, stop on shutdown."""
        tags = tag_list(tags_for(self.cluster, Role.WORKER, user))
        root = self.root_device_name(spec.image_id)
        params: dict[str, Any] = {
            "ImageId": spec.image_id,
            "InstanceType": spec.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": spec.subnet_id,
            "SecurityGroupIds": list(spec.security_group_ids),
            "KeyName": spec.key_name,
            "BlockDeviceMappings": [
                {
                    "DeviceName": root,
                    "Ebs": {
                        "VolumeSize": spec.ebs_size,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                        "Encrypted": spec.hibernate,
                    },
                }
            ],
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 1,
            },
            "InstanceInitiatedShutdownBehavior": "stop",
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
            "ClientToken": client_token,
        }
        if spec.hibernate:
            params["HibernationOptions"] = {"Configured": True}
        context = {"instance_type": spec.instance_type, "image": spec.image_id}
        reply = self._call("run_instances", context, **params)
        return Instance.from_api(reply["Instances"][0])

    # ---- guarded actions ---------------------------------------------------

    def guard(self, instance_ids: Iterable[str], roles: Iterable[Role]) -> list[Instance]:
        """Re-read each instance and refuse unless it is tagged for this cluster and role."""
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            raise NotOurs("refusing an EC2 action with no explicit instance ids")
        allowed = {r.value for r in roles}
        found = {i.id: i for i in self.describe(ids)}
        bad = [
            i
            for i in ids
            if i not in found or found[i].cluster != self.cluster or found[i].role not in allowed
        ]
        if bad:
            raise NotOurs(
                f"refusing to act on {', '.join(bad)}: not tagged "
                f"{CLUSTER_TAG}={self.cluster} with role {'/'.join(sorted(allowed))}"
            )
        return [found[i] for i in ids]

    def start(self, instance_id: str) -> None:
        self.guard([instance_id], [Role.WORKER])
        self._call("start_instances", InstanceIds=[instance_id])

    def stop(self, instance_id: str, hibernate: bool = False) -> None:
        self.guard([instance_id], [Role.WORKER])
        self._call("stop_instances", InstanceIds=[instance_id], Hibernate=hibernate)

    def terminate(
        self, instance_ids: Iterable[str], roles: Iterable[Role] = (Role.WORKER,)
    ) -> list[str]:
        checked = self.guard(instance_ids, roles)
        ids = [i.id for i in checked]
        for chunk in _chunks(ids, 200):
            self._call("terminate_instances", InstanceIds=chunk)
        return ids

    # ---- home volumes ------------------------------------------------------

    def find_home_volume(self, user: str) -> dict[str, Any] | None:
        volumes = self._call(
            "describe_volumes", Filters=filters(self.cluster, Role.HOME, user)
        ).get("Volumes", [])
        return volumes[0] if volumes else None

    def create_home_volume(self, user: str, size: int, zone: str) -> str:
        tags = tag_list(tags_for(self.cluster, Role.HOME, user))
        reply = self._call(
            "create_volume",
            AvailabilityZone=zone,
            Size=size,
            VolumeType="gp3",
            Encrypted=True,
            TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
        )
        return reply["VolumeId"]

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        self.guard([instance_id], [Role.WORKER])
        self._call("attach_volume", VolumeId=volume_id, InstanceId=instance_id, Device=device)
        self._call(
            "modify_instance_attribute",
            InstanceId=instance_id,
            BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": False}}],
        )

    # ---- cluster resources (launcher and local cloud) ------------------------

    def describe_all(self) -> list[Instance]:
        """Every instance the endpoint knows: the local fleet emulator plays all of them."""
        return self._describe(MaxResults=1000)

    def _find_one(
        self, action: str, key: str, tag_filters: dict[str, str]
    ) -> dict[str, Any] | None:
        flt = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tag_filters.items()]
        found = self._call(action, Filters=flt).get(key, [])
        return found[0] if found else None

    def ensure_vpc(self, cidr: str, tags: dict[str, str]) -> str:
        vpc = self._find_one("describe_vpcs", "Vpcs", tags)
        if vpc:
            return vpc["VpcId"]
        spec = [{"ResourceType": "vpc", "Tags": tag_list(tags)}]
        return self._call("create_vpc", CidrBlock=cidr, TagSpecifications=spec)["Vpc"]["VpcId"]

    def ensure_subnet(self, vpc_id: str, cidr: str, tags: dict[str, str]) -> str:
        subnet = self._find_one("describe_subnets", "Subnets", tags)
        if subnet:
            return subnet["SubnetId"]
        spec = [{"ResourceType": "subnet", "Tags": tag_list(tags)}]
        reply = self._call("create_subnet", VpcId=vpc_id, CidrBlock=cidr, TagSpecifications=spec)
        return reply["Subnet"]["SubnetId"]

    def ensure_internet_route(self, vpc_id: str, subnet_id: str, tags: dict[str, str]) -> str:
        """An internet gateway and a 0.0.0.0/0 route for a public subnet."""
        igw = self._find_one("describe_internet_gateways", "InternetGateways", tags)
        if igw:
            return igw["InternetGatewayId"]
        spec = [{"ResourceType": "internet-gateway", "Tags": tag_list(tags)}]
        igw_id = self._call("create_internet_gateway", TagSpecifications=spec)["InternetGateway"][
            "InternetGatewayId"
        ]
        self._call("attach_internet_gateway", InternetGatewayId=igw_id, VpcId=vpc_id)
        spec = [{"ResourceType": "route-table", "Tags": tag_list(tags)}]
        table = self._call("create_route_table", VpcId=vpc_id, TagSpecifications=spec)
        table_id = table["RouteTable"]["RouteTableId"]
        self._call(
            "create_route",
            RouteTableId=table_id,
            DestinationCidrBlock="0.0.0.0/0",
            GatewayId=igw_id,
        )
        self._call("associate_route_table", RouteTableId=table_id, SubnetId=subnet_id)
        return igw_id

    def ensure_security_group(
        self, vpc_id: str, name: str, description: str, tags: dict[str, str]
    ) -> tuple[str, bool]:
        """(group id, created?) for a named group of this VPC."""
        found = self._call(
            "describe_security_groups",
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [name]},
            ],
        ).get("SecurityGroups", [])
        if found:
            return found[0]["GroupId"], False
        spec = [{"ResourceType": "security-group", "Tags": tag_list(tags)}]
        reply = self._call(
            "create_security_group",
            GroupName=name,
            Description=description,
            VpcId=vpc_id,
            TagSpecifications=spec,
        )
        return reply["GroupId"], True

    def authorize_ingress(self, group_id: str, permissions: list[dict[str, Any]]) -> None:
        # One rule per call: EC2 rejects a whole batch if any rule in it exists,
        # which would silently drop the new rules of a re-run.
        for permission in permissions:
            try:
                self._call(
                    "authorize_security_group_ingress",
                    GroupId=group_id,
                    IpPermissions=[permission],
                )
            except CloudError as exc:
                if exc.code != "InvalidPermission.Duplicate":
                    raise

    def import_key_pair(self, name: str, public_key: str, tags: dict[str, str]) -> None:
        existing = self._call(
            "describe_key_pairs", Filters=[{"Name": "key-name", "Values": [name]}]
        )
        if existing.get("KeyPairs"):
            return
        self._call(
            "import_key_pair",
            KeyName=name,
            PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag_list(tags)}],
        )

    def public_keys(self) -> dict[str, str]:
        """Key pair name -> OpenSSH public key, for the emulator's authorized_keys."""
        pairs = self._call("describe_key_pairs", IncludePublicKey=True).get("KeyPairs", [])
        return {p["KeyName"]: p.get("PublicKey", "") for p in pairs}

    def instance_key_name(self, instance_id: str) -> str | None:
        reply = self._call("describe_instances", InstanceIds=[instance_id])
        for reservation in reply.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                return inst.get("KeyName")
        return None

    def find_image(self, tags: dict[str, str]) -> dict[str, Any] | None:
        flt = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        images = self._call("describe_images", Owners=["self"], Filters=flt).get("Images", [])
        return images[0] if images else None

    def public_images(self) -> list[dict[str, Any]]:
        return self._call("describe_images", Owners=["amazon"]).get("Images", [])

    def run_instance(
        self,
        image_id: str,
        instance_type: str,
        subnet_id: str,
        group_ids: list[str],
        key_name: str,
        tags: dict[str, str],
        instance_profile: str | None = None,
    ) -> Instance:
        """A non-worker instance (builder, manager), with IMDSv2 required."""
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": subnet_id,
            "SecurityGroupIds": group_ids,
            "KeyName": key_name,
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(tags)}],
        }
        if instance_profile:
            params["IamInstanceProfile"] = {"Name": instance_profile}
        context = {"instance_type": instance_type, "image": image_id}
        return Instance.from_api(self._call("run_instances", context, **params)["Instances"][0])

    def create_image(self, instance_id: str, name: str, tags: dict[str, str]) -> str:
        self.guard([instance_id], [Role.BUILDER])
        reply = self._call(
            "create_image",
            InstanceId=instance_id,
            Name=name,
            TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}],
        )
        return reply["ImageId"]

    def tag_image_snapshots(self, image_id: str, tags: dict[str, str]) -> list[str]:
        """Tag an image's snapshots, so teardown can find them (moto lacks snapshot
        TagSpecifications on CreateImage, and tagging afterwards works everywhere)."""
        images = self._call("describe_images", ImageIds=[image_id]).get("Images", [])
        snapshots = [
            m["Ebs"]["SnapshotId"]
            for image in images
            for m in image.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")
        ]
        if snapshots:
            self._call("create_tags", Resources=snapshots, Tags=tag_list(tags))
        return snapshots

    def image_state(self, image_id: str) -> str:
        images = self._call("describe_images", ImageIds=[image_id]).get("Images", [])
        return images[0].get("State", "unknown") if images else "missing"
