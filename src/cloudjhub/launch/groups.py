"""The three security groups of a cluster, as the original system had them.

manager:  the hub's public face: only the ports it serves (80 for plain HTTP;
          443, and 80 for the redirect, with TLS); SSH only from the admin CIDR.
manager2: what workers may reach on the manager (the hub API).
worker:   reachable only from the manager (SSH and the notebook port).
References run manager2 -> worker -> manager, never back, so the groups can
be deleted in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..aws.admin import AdminEc2
from ..tags import Role, tags_for

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
    created: list[str] | None = None,
    public_ports: tuple[int, ...] = (80,),
) -> ClusterGroups:
    """Find or create the groups; ids created are appended to `created` as they are
    made, so a caller can undo them even if a later rule fails."""
    cluster = ec2.cluster
    ids: dict[str, str] = {}
    if created is None:
        created = []
    for suffix, text in (
        ("manager", "cloudjhub hub: public web"),
        ("manager2", "cloudjhub hub: API for workers"),
        ("worker", "cloudjhub workers: only from the hub"),
    ):
        name = f"{cluster}-{suffix}"
        group_id, new = ec2.ensure_security_group(
            vpc_id,
            name,
            text,
            tags_for(cluster, Role.MANAGER if suffix != "worker" else Role.WORKER, name=name),
        )
        ids[suffix] = group_id
        if new:
            created.append(group_id)
    manager_rules = [_tcp(port, cidr="0.0.0.0/0") for port in public_ports]
    if admin_cidr:
        manager_rules.append(_tcp(ssh_port, cidr=admin_cidr))
    ec2.authorize_ingress(ids["manager"], manager_rules)
    ec2.authorize_ingress(
        ids["worker"],
        [_tcp(ssh_port, group=ids["manager"]), _tcp(notebook_port, group=ids["manager"])],
    )
    ec2.authorize_ingress(ids["manager2"], [_tcp(HUB_API_PORT, group=ids["worker"])])
    return ClusterGroups(ids["manager"], ids["manager2"], ids["worker"], tuple(created))
