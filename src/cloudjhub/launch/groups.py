"""The three security groups of a cluster, as the original system had them.

manager:  the hub's public face: only the ports it serves (80 for plain HTTP;
          443, and 80 for the redirect, with TLS); SSH only from the admin CIDR.
manager2: what workers may reach on the manager (the hub API).
worker:   reachable only from the manager (SSH and the notebook port).
References run manager2 -> worker -> manager, never back, so the groups can
be deleted in that order.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass

from ..aws.admin import AdminEc2
from ..tags import Group, Role, group_name, tags_for

HUB_API_PORT = 8081


@dataclass(frozen=True)
class ClusterGroups:
    manager: str
    manager2: str
    worker: str
    created: tuple[str, ...] = ()


def _tcp(port: int, **source: str) -> dict[str, object]:
    perm: dict[str, object] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if "cidr" in source:
        perm["IpRanges"] = [{"CidrIp": source["cidr"]}]
    else:
        perm["UserIdGroupPairs"] = [{"GroupId": source["group"]}]
    return perm


def ensure_security_groups(
    ec2: AdminEc2,
    vpc_id: str,
    admin_cidr: str | None = None,
    notebook_port: int = 8888,
    ssh_port: int = 22,
    created: MutableMapping[str, str] | None = None,
    public_ports: tuple[int, ...] = (80,),
) -> ClusterGroups:
    """Find or create the groups; each one created is recorded in `created` (id ->
    name) as it is made, so a caller can undo it even if a later rule fails."""
    cluster = ec2.cluster
    ids: dict[Group, str] = {}
    if created is None:
        created = {}
    for group, text in (
        (Group.MANAGER, "cloudjhub hub: public web"),
        (Group.MANAGER2, "cloudjhub hub: API for workers"),
        (Group.WORKER, "cloudjhub workers: only from the hub"),
    ):
        name = group_name(cluster, group)
        role = Role.WORKER if group is Group.WORKER else Role.MANAGER
        group_id, new = ec2.ensure_security_group(
            vpc_id, name, text, tags_for(cluster, role, name=name)
        )
        ids[group] = group_id
        if new:
            created[group_id] = name
    manager, manager2, worker = ids[Group.MANAGER], ids[Group.MANAGER2], ids[Group.WORKER]
    manager_rules = [_tcp(port, cidr="0.0.0.0/0") for port in public_ports]
    if admin_cidr:
        manager_rules.append(_tcp(ssh_port, cidr=admin_cidr))
    ec2.authorize_ingress(manager, manager_rules)
    ec2.authorize_ingress(
        worker, [_tcp(ssh_port, group=manager), _tcp(notebook_port, group=manager)]
    )
    ec2.authorize_ingress(manager2, [_tcp(HUB_API_PORT, group=worker)])
    return ClusterGroups(manager, manager2, worker, tuple(created))
