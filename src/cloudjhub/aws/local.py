"""What only the local cloud asks of EC2 and IAM: a network to put a demo cluster in,
a base image, the key pairs and instances the fleet emulator plays, a stand-in
instance profile. Real clusters are given these by their admin."""

from __future__ import annotations

from typing import Any

from ..tags import tag_list
from .admin import AdminEc2, instance_profile_exists
from .client import Instance, boto_client, call

_EC2_TRUST = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
    '"Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
)


class LocalCloudEc2(AdminEc2):
    """The admin's door plus the local cloud's extras."""

    def _find_one(self, action: str, key: str, tags: dict[str, str]) -> dict[str, Any] | None:
        found = self._tagged(action, key, tags)
        return found[0] if found else None

    def ensure_vpc(self, cidr: str, tags: dict[str, str]) -> str:
        vpc = self._find_one("describe_vpcs", "Vpcs", tags)
        if vpc:
            return str(vpc["VpcId"])
        spec = [{"ResourceType": "vpc", "Tags": tag_list(tags)}]
        return str(self._call("create_vpc", CidrBlock=cidr, TagSpecifications=spec)["Vpc"]["VpcId"])

    def ensure_subnet(self, vpc_id: str, cidr: str, tags: dict[str, str]) -> str:
        subnet = self._find_one("describe_subnets", "Subnets", tags)
        if subnet:
            return str(subnet["SubnetId"])
        spec = [{"ResourceType": "subnet", "Tags": tag_list(tags)}]
        reply = self._call("create_subnet", VpcId=vpc_id, CidrBlock=cidr, TagSpecifications=spec)
        return str(reply["Subnet"]["SubnetId"])

    def ensure_internet_route(self, vpc_id: str, subnet_id: str, tags: dict[str, str]) -> str:
        """An internet gateway and a 0.0.0.0/0 route for a public subnet."""
        igw = self._find_one("describe_internet_gateways", "InternetGateways", tags)
        if igw:
            return str(igw["InternetGatewayId"])
        spec = [{"ResourceType": "internet-gateway", "Tags": tag_list(tags)}]
        igw_id = str(
            self._call("create_internet_gateway", TagSpecifications=spec)["InternetGateway"][
                "InternetGatewayId"
            ]
        )
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

    def tag_resource(self, resource_id: str, tags: dict[str, str]) -> None:
        self._call("create_tags", Resources=[resource_id], Tags=tag_list(tags))

    def public_images(self) -> list[dict[str, Any]]:
        return list(self._call("describe_images", Owners=["amazon"]).get("Images", []))

    def public_keys(self) -> dict[str, str]:
        """Key pair name -> OpenSSH public key, for the emulator's authorized_keys."""
        pairs = self._call("describe_key_pairs", IncludePublicKey=True).get("KeyPairs", [])
        return {p["KeyName"]: p.get("PublicKey", "") for p in pairs}

    def instances_in_group(self, group_id: str) -> list[Instance]:
        """Instances (in any state) that have this security group."""
        return self._instances(Filters=[{"Name": "instance.group-id", "Values": [group_id]}])

    def image_snapshots(self, image_id: str) -> list[str]:
        """The EBS snapshots behind an image; none for an image that is gone."""
        images = self._call("describe_images", ImageIds=[image_id]).get("Images", [])
        return [
            m["Ebs"]["SnapshotId"]
            for image in images
            for m in image.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")
        ]

    def describe_all(self) -> list[Instance]:
        """Every instance the endpoint knows: the local fleet emulator plays all of them."""
        return self._instances(MaxResults=1000)


def ensure_instance_profile(name: str, region: str, endpoint_url: str | None = None) -> str:
    """A role and instance profile named `name` (the local cloud's stand-in for the
    admin's); returns the profile name."""
    if instance_profile_exists(name, region, endpoint_url):
        return name
    iam = boto_client("iam", region, endpoint_url)
    call(iam, "create_role", RoleName=name, AssumeRolePolicyDocument=_EC2_TRUST)
    call(iam, "create_instance_profile", InstanceProfileName=name)
    call(iam, "add_role_to_instance_profile", InstanceProfileName=name, RoleName=name)
    return name
