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

from .metrics import count_ec2_call
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


class _Context(dict[str, str]):
    """Message context in which a missing fact reads as 'the requested one'."""

    def __missing__(self, key: str) -> str:
        return f"(the requested {key.replace('_', ' ')})"


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
    public_ip: str | None = None
    instance_profile: str | None = None

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
            public_ip=data.get("PublicIpAddress") or None,
            instance_profile=(data.get("IamInstanceProfile") or {}).get("Arn"),
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


def make_client(region: str | None, endpoint_url: str | None = None) -> Any:
    """An EC2 client from the standard credential chain, with adaptive retries.

    A None region or endpoint falls back to the chain (AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL, profiles); a missing region is a CloudError, not a traceback.
    """
    session = boto3.session.Session()
    try:
        return session.client(
            "ec2", region_name=region, endpoint_url=endpoint_url, config=RETRY_CONFIG
        )
    except (BotoCoreError, ValueError) as exc:  # no region; a malformed endpoint URL
        raise CloudError(f"cannot make an EC2 client: {exc}", type(exc).__name__) from exc


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
    def connect(cls, cluster: str, region: str | None, endpoint_url: str | None = None) -> Ec2:
        return cls(cluster, make_client(region, endpoint_url))

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def _call(self, action: str, context: dict[str, str] | None = None, **kwargs: Any) -> Any:
        try:
            reply = getattr(self.client, action)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "Unknown")
            count_ec2_call(action, code)
            template = _USER_MESSAGES.get(code)
            if template:
                message = template.format_map(_Context(context or {}))
            else:
                message = f"EC2 {action} failed: {code}: {err.get('Message', '')}"
            raise CloudError(message, code) from exc
        except BotoCoreError as exc:
            count_ec2_call(action, type(exc).__name__)
            raise CloudError(f"EC2 {action} failed: {exc}", type(exc).__name__) from exc
        count_ec2_call(action, "ok")
        return reply

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
        """Instances by id; one AWS no longer lists (terminated long ago) is absent.

        A filter, not InstanceIds: asking for a vanished id by InstanceIds fails
        the whole call with InvalidInstanceID.NotFound."""
        ids = list(dict.fromkeys(instance_ids))
        out: list[Instance] = []
        for chunk in _chunks(ids, 200):
            out.extend(self._describe(Filters=[{"Name": "instance-id", "Values": chunk}]))
        return out

    def console_output(self, instance_id: str) -> str:
        # Not Latest=True: that is Nitro-only, and the boot output we need
        # (cloud-init's host keys) is in the buffered output on every platform.
        reply = self._call("get_console_output", InstanceId=instance_id)
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

    def start(self, instance_id: str, roles: Iterable[Role] = (Role.WORKER,)) -> None:
        self.guard([instance_id], roles)
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
        """Attach a home volume to one of this cluster's workers.

        A volume attached after launch has DeleteOnTermination false (AttachVolume's
        own default), so it outlives its worker without ModifyInstanceAttribute,
        which the hub's IAM role does not have.
        """
        self.guard([instance_id], [Role.WORKER])
        self._call("attach_volume", VolumeId=volume_id, InstanceId=instance_id, Device=device)

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
            owner = tag_dict(found[0].get("Tags")).get(CLUSTER_TAG)
            if owner != tags.get(CLUSTER_TAG):
                raise NotOurs(
                    f"security group {name} ({found[0]['GroupId']}) already exists in {vpc_id} "
                    f"but is not tagged {CLUSTER_TAG}={tags.get(CLUSTER_TAG)}; "
                    "refusing to change its rules"
                )
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
        public_ip: bool = False,
    ) -> Instance:
        """A non-worker instance (builder, manager), with IMDSv2 required; with a
        public IP when asked, whatever the subnet's auto-assign setting."""
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "NetworkInterfaces": [
                {
                    "DeviceIndex": 0,
                    "SubnetId": subnet_id,
                    "Groups": group_ids,
                    "AssociatePublicIpAddress": public_ip,
                }
            ],
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

    # ---- teardown (lifecycle commands): every delete re-reads the tags first --

    def _pages(self, action: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._call(action, **kwargs, **({"NextToken": token} if token else {}))
            out.extend(page.get(key, []))
            token = page.get("NextToken")
            if not token:
                return out

    def _by_id(
        self, action: str, key: str, id_key: str, id_filter: str, ids: list[str], **kwargs: Any
    ) -> dict[str, dict[str, Any]]:
        """Fresh describe of explicit ids; unknown ids are simply absent (no NotFound)."""
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(ids, 200):
            flt = [{"Name": id_filter, "Values": chunk}]
            for item in self._pages(action, key, Filters=flt, **kwargs):
                out[item[id_key]] = item
        return out

    def _check_ours(
        self, kind: str, ids: list[str], found: dict[str, dict[str, Any]], role: Role | None
    ) -> None:
        """Refuse unless each id was just read back tagged for this cluster (and role)."""
        if not ids:
            raise NotOurs(f"refusing to delete {kind}s with no explicit ids")
        bad = []
        for rid in ids:
            tags = tag_dict(found[rid].get("Tags")) if rid in found else {}
            if tags.get(CLUSTER_TAG) != self.cluster or (
                role is not None and tags.get(ROLE_TAG) != role.value
            ):
                bad.append(rid)
        if bad:
            what = f"{CLUSTER_TAG}={self.cluster}" + (f" with role {role.value}" if role else "")
            raise NotOurs(f"refusing to delete {kind} {', '.join(bad)}: not tagged {what}")

    def cluster_volumes(self, role: Role = Role.HOME) -> list[dict[str, Any]]:
        return self._pages("describe_volumes", "Volumes", Filters=filters(self.cluster, role))

    def volume_states(self, volume_ids: Iterable[str]) -> dict[str, str]:
        """Volume id -> state; 'missing' for volumes that no longer exist."""
        ids = list(dict.fromkeys(volume_ids))
        found = self._by_id("describe_volumes", "Volumes", "VolumeId", "volume-id", ids)
        return {i: found[i]["State"] if i in found else "missing" for i in ids}

    def delete_home_volume(self, volume_id: str) -> None:
        """Delete one detached home volume of this cluster; never one in use."""
        found = self._by_id("describe_volumes", "Volumes", "VolumeId", "volume-id", [volume_id])
        self._check_ours("volume", [volume_id], found, Role.HOME)
        state = found[volume_id]["State"]
        if state != "available":
            raise CloudError(f"volume {volume_id} is {state}, not detached", "VolumeInUse")
        self._call("delete_volume", VolumeId=volume_id)

    def security_groups_named(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """Groups with these names in any VPC, ours or not: callers check the tags."""
        flt = [{"Name": "group-name", "Values": list(names)}]
        return self._pages("describe_security_groups", "SecurityGroups", Filters=flt)

    def _our_group(self, group_id: str) -> dict[str, Any]:
        found = self._by_id(
            "describe_security_groups", "SecurityGroups", "GroupId", "group-id", [group_id]
        )
        self._check_ours("security group", [group_id], found, None)
        return found[group_id]

    def revoke_group_references(self, group_id: str, referenced: Iterable[str]) -> int:
        """Drop ingress rules of one of our groups that name any `referenced` group, so
        groups pointing at each other can be deleted even if one of them cannot."""
        targets = set(referenced)
        rules = []
        for perm in self._our_group(group_id).get("IpPermissions", []):
            pairs = [
                p["GroupId"] for p in perm.get("UserIdGroupPairs", []) if p["GroupId"] in targets
            ]
            if pairs:
                rule = {k: perm[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in perm}
                rules.append({**rule, "UserIdGroupPairs": [{"GroupId": g} for g in pairs]})
        if rules:
            self._call("revoke_security_group_ingress", GroupId=group_id, IpPermissions=rules)
        return len(rules)

    def delete_security_group(self, group_id: str) -> None:
        self._our_group(group_id)
        self._call("delete_security_group", GroupId=group_id)

    def cluster_images(self) -> list[dict[str, Any]]:
        """Worker images of this cluster, in any state."""
        flt = filters(self.cluster, Role.IMAGE)
        return self._call("describe_images", Owners=["self"], Filters=flt).get("Images", [])

    def cluster_snapshots(self) -> list[dict[str, Any]]:
        flt = filters(self.cluster, Role.IMAGE)
        return self._pages("describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=flt)

    def deregister_image(self, image_id: str) -> None:
        found = {
            i["ImageId"]: i
            for i in self._call(
                "describe_images",
                Owners=["self"],
                Filters=[{"Name": "image-id", "Values": [image_id]}],
            ).get("Images", [])
        }
        self._check_ours("image", [image_id], found, Role.IMAGE)
        self._call("deregister_image", ImageId=image_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        found = self._by_id(
            "describe_snapshots",
            "Snapshots",
            "SnapshotId",
            "snapshot-id",
            [snapshot_id],
            OwnerIds=["self"],
        )
        self._check_ours("snapshot", [snapshot_id], found, Role.IMAGE)
        self._call("delete_snapshot", SnapshotId=snapshot_id)

    def key_pair(self, name: str) -> dict[str, Any] | None:
        flt = [{"Name": "key-name", "Values": [name]}]
        found = self._call("describe_key_pairs", Filters=flt).get("KeyPairs", [])
        return found[0] if found else None

    def delete_key_pair(self, name: str) -> None:
        pair = self.key_pair(name)
        self._check_ours("key pair", [name], {name: pair} if pair else {}, None)
        self._call("delete_key_pair", KeyName=name)

    # ---- launcher preflight (reads only) -------------------------------------

    def subnets(self, subnet_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Subnets by id; a missing one is simply absent."""
        out: dict[str, dict[str, Any]] = {}
        for subnet_id in subnet_ids:
            try:
                found = self._call("describe_subnets", SubnetIds=[subnet_id]).get("Subnets", [])
            except CloudError as exc:
                if exc.code.startswith("InvalidSubnet"):
                    continue
                raise
            out.update({s["SubnetId"]: s for s in found})
        return out

    def routes_to_internet(self, vpc_id: str, subnet_id: str) -> bool:
        """Whether the subnet's route table sends 0.0.0.0/0 to an internet gateway."""
        tables = self._call(
            "describe_route_tables",
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}],
        ).get("RouteTables", [])
        if not tables:  # no explicit association: the VPC's main table applies
            tables = self._call(
                "describe_route_tables",
                Filters=[
                    {"Name": "vpc-id", "Values": [vpc_id]},
                    {"Name": "association.main", "Values": ["true"]},
                ],
            ).get("RouteTables", [])
        return any(
            r.get("DestinationCidrBlock") == "0.0.0.0/0"
            and str(r.get("GatewayId", "")).startswith("igw-")
            for t in tables
            for r in t.get("Routes", [])
        )

    def image(self, image_id: str) -> dict[str, Any] | None:
        try:
            images = self._call("describe_images", {"image": image_id}, ImageIds=[image_id]).get(
                "Images", []
            )
        except CloudError as exc:
            if exc.code.startswith("InvalidAMIID"):
                return None
            raise
        return images[0] if images else None

    def instance_type_exists(self, instance_type: str) -> bool:
        try:
            found = self._call("describe_instance_types", InstanceTypes=[instance_type])
        except CloudError as exc:
            if exc.code in ("InvalidInstanceType", "InvalidParameterValue"):
                return False
            raise
        return bool(found.get("InstanceTypes"))

    def tag_resource(self, resource_id: str, tags: dict[str, str]) -> None:
        self._call("create_tags", Resources=[resource_id], Tags=tag_list(tags))

    def cluster_instances(self, role: Role) -> list[Instance]:
        return [
            i for i in self.describe_cluster(role) if i.state not in ("terminated", "shutting-down")
        ]


def instance_profile_exists(name: str, region: str, endpoint_url: str | None = None) -> bool:
    """IAM is asked once, by the launcher's preflight; it lives here with the other boto3 use."""
    try:
        session = boto3.session.Session()
        iam = session.client(
            "iam", region_name=region, endpoint_url=endpoint_url, config=RETRY_CONFIG
        )
        iam.get_instance_profile(InstanceProfileName=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if code == "NoSuchEntity":
            return False
        raise CloudError(f"IAM GetInstanceProfile failed: {exc}", code) from exc
    except (BotoCoreError, ValueError) as exc:  # no credentials, unreachable, bad endpoint
        raise CloudError(f"IAM GetInstanceProfile failed: {exc}", type(exc).__name__) from exc
    return True


def default_region(fallback: str) -> str:
    """The region the standard boto3 chain picks (AWS_DEFAULT_REGION, profile), else fallback."""
    try:
        return boto3.session.Session().region_name or fallback
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        raise CloudError(f"cannot read the AWS configuration: {exc}", type(exc).__name__) from exc


def ensure_instance_profile(name: str, region: str, endpoint_url: str | None = None) -> str:
    """A role and instance profile named `name` (the local cloud's stand-in for the
    admin's); returns the profile name."""
    session = boto3.session.Session()
    iam = session.client("iam", region_name=region, endpoint_url=endpoint_url, config=RETRY_CONFIG)
    if instance_profile_exists(name, region, endpoint_url):
        return name
    trust = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
        '"Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
    )
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name
