"""What an admin's tools do in AWS: the launcher, its preflight and teardown.

Everything the hub may do, plus security groups, images and snapshots, key pairs,
non-worker instances and guarded deletes. Every delete re-reads the resource's tags
through the one guard (`Ec2Client.refuse_unless_ours`) first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..tags import (
    CLUSTER_TAG,
    Role,
    filter_value,
    has_tags,
    selector,
    tag_dict,
    tag_filters,
    tag_list,
)
from . import snapshots
from .client import CloudError, Instance, NotOurs, boto_client, call, chunks
from .hub import HubEc2


def image_snapshots(image: dict[str, Any]) -> list[str]:
    """The snapshot ids behind an image's block devices."""
    return [
        m["Ebs"]["SnapshotId"]
        for m in image.get("BlockDeviceMappings", [])
        if m.get("Ebs", {}).get("SnapshotId")
    ]


def instance_profile_exists(name: str, region: str, endpoint_url: str | None = None) -> bool:
    """IAM is asked once, by the launcher's preflight."""
    iam = boto_client("iam", region, endpoint_url)
    try:
        call(iam, "get_instance_profile", InstanceProfileName=name)
    except CloudError as exc:
        if exc.code == "NoSuchEntity":
            return False
        raise
    return True


class AdminEc2(HubEc2):
    """EC2 for one cluster, as the admin's launcher and teardown use it."""

    # ---- instances -----------------------------------------------------------

    def cluster_instances(self, role: Role) -> list[Instance]:
        return [i for i in self.describe_cluster(role) if i.live]

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

    def terminate(
        self, instance_ids: Iterable[str], roles: Iterable[Role] = (Role.WORKER,)
    ) -> list[str]:
        ids = [i.id for i in self.guard(instance_ids, roles)]
        for chunk in chunks(ids, 200):
            self._call("terminate_instances", InstanceIds=chunk)
        return ids

    # ---- images and snapshots --------------------------------------------------

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

    def image_state(self, image_id: str) -> str:
        image = self.image(image_id)
        return str(image.get("State", "unknown")) if image else "missing"

    def find_image(self, tags: dict[str, str]) -> dict[str, Any] | None:
        images = self._tagged_images(tags)
        return images[0] if images else None

    def _tagged_images(self, wanted: dict[str, str]) -> list[dict[str, Any]]:
        flt = tag_filters(wanted)
        images = self._call("describe_images", Owners=["self"], Filters=flt).get("Images", [])
        return [i for i in images if has_tags(tag_dict(i.get("Tags")), wanted)]

    def create_image(self, instance_id: str, name: str, tags: dict[str, str]) -> str:
        self.guard([instance_id], [Role.BUILDER])
        reply = self._call(
            "create_image",
            InstanceId=instance_id,
            Name=name,
            TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}],
        )
        return str(reply["ImageId"])

    def tag_image_snapshots(self, image_id: str, tags: dict[str, str]) -> list[str]:
        """Tag an image's snapshots, so teardown can find them (moto lacks snapshot
        TagSpecifications on CreateImage, and tagging afterwards works everywhere)."""
        snapshots = image_snapshots(self.image(image_id) or {})
        if snapshots:
            self._call("create_tags", Resources=snapshots, Tags=tag_list(tags))
        return snapshots

    def cluster_images(self) -> list[dict[str, Any]]:
        """Worker images of this cluster, in any state."""
        return self._tagged_images(selector(self.cluster, Role.IMAGE))

    def cluster_snapshots(self) -> list[dict[str, Any]]:
        wanted = selector(self.cluster, Role.IMAGE)
        return self._tagged("describe_snapshots", "Snapshots", wanted, OwnerIds=["self"])

    def deregister_image(self, image_id: str) -> None:
        images = self._call(
            "describe_images", Owners=["self"], Filters=[{"Name": "image-id", "Values": [image_id]}]
        ).get("Images", [])
        tags = {i["ImageId"]: tag_dict(i.get("Tags")) for i in images}
        self.refuse_unless_ours("image", [image_id], tags, [Role.IMAGE])
        self._call("deregister_image", ImageId=image_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        found = snapshots.snapshot(self, snapshot_id)
        tags = {snapshot_id: tag_dict(found.get("Tags"))} if found else {}
        self.refuse_unless_ours("snapshot", [snapshot_id], tags, [Role.IMAGE])
        self._call("delete_snapshot", SnapshotId=snapshot_id)

    # ---- home volumes ----------------------------------------------------------

    def cluster_volumes(self, role: Role = Role.HOME) -> list[dict[str, Any]]:
        return self._tagged("describe_volumes", "Volumes", selector(self.cluster, role))

    def volume_states(self, volume_ids: Iterable[str]) -> dict[str, str]:
        """Volume id -> state; 'missing' for volumes that no longer exist."""
        ids = list(dict.fromkeys(volume_ids))
        found = self._by_id("describe_volumes", "Volumes", "VolumeId", "volume-id", ids)
        return {i: found[i]["State"] if i in found else "missing" for i in ids}

    def delete_home_volume(self, volume_id: str) -> None:
        """Delete one detached home volume of this cluster; never one in use."""
        found = self._by_id("describe_volumes", "Volumes", "VolumeId", "volume-id", [volume_id])
        tags = {k: tag_dict(v.get("Tags")) for k, v in found.items()}
        self.refuse_unless_ours("volume", [volume_id], tags, [Role.HOME])
        state = found[volume_id]["State"]
        if state != "available":
            raise CloudError(f"volume {volume_id} is {state}, not detached", "VolumeInUse")
        self._call("delete_volume", VolumeId=volume_id)

    # ---- security groups -------------------------------------------------------

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
            return str(found[0]["GroupId"]), False
        spec = [{"ResourceType": "security-group", "Tags": tag_list(tags)}]
        reply = self._call(
            "create_security_group",
            GroupName=name,
            Description=description,
            VpcId=vpc_id,
            TagSpecifications=spec,
        )
        return str(reply["GroupId"]), True

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

    def security_groups_named(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """Groups with these names in any VPC, ours or not: callers check the tags."""
        flt = [{"Name": "group-name", "Values": [filter_value(n) for n in names]}]
        return self._pages("describe_security_groups", "SecurityGroups", Filters=flt)

    def _our_group(self, group_id: str) -> dict[str, Any]:
        found = self._by_id(
            "describe_security_groups", "SecurityGroups", "GroupId", "group-id", [group_id]
        )
        tags = {k: tag_dict(v.get("Tags")) for k, v in found.items()}
        self.refuse_unless_ours("security group", [group_id], tags)
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

    # ---- key pairs -------------------------------------------------------------

    def key_pair(self, name: str) -> dict[str, Any] | None:
        flt = [{"Name": "key-name", "Values": [filter_value(name)]}]
        found = self._call("describe_key_pairs", Filters=flt).get("KeyPairs", [])
        return next((k for k in found if k.get("KeyName") == name), None)

    def import_key_pair(self, name: str, public_key: str, tags: dict[str, str]) -> None:
        if self.key_pair(name) is not None:
            return
        self._call(
            "import_key_pair",
            KeyName=name,
            PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag_list(tags)}],
        )

    def delete_key_pair(self, name: str) -> None:
        pair = self.key_pair(name)
        tags = {name: tag_dict(pair.get("Tags"))} if pair else {}
        self.refuse_unless_ours("key pair", [name], tags)
        self._call("delete_key_pair", KeyName=name)

    # ---- preflight reads ---------------------------------------------------------

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

    def instance_type(self, instance_type: str) -> dict[str, Any] | None:
        """What DescribeInstanceTypes says of a type (memory, architectures), or None."""
        try:
            found = self._call("describe_instance_types", InstanceTypes=[instance_type])
        except CloudError as exc:
            if exc.code in ("InvalidInstanceType", "InvalidParameterValue"):
                return None
            raise
        types = found.get("InstanceTypes", [])
        return dict(types[0]) if types else None
