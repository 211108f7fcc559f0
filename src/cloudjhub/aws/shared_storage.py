"""The cluster's shared course folder on Amazon EFS: its file system, the security
group that admits NFS only from the cluster's workers, a mount target in each
workers' subnet, and the file system's policy (written by launch/iam_shared.py).

The file system is found again by its creation token (one per cluster, which also
makes CreateFileSystem idempotent) and is ours only if it carries the cluster's tag.
AWS creates file systems and mount targets asynchronously ("creating", then
"available"; a mount target is "deleting" for a while and the file system cannot be
deleted until it is gone: EFS API reference, CreateMountTarget, DeleteFileSystem),
so every wait here is a real poll, and says (`say`) what it waits for meanwhile.
moto makes them available at once; the local cloud's --like-aws does not
(local/awslike/efs_creating.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..tags import CLUSTER_TAG, Role, tag_dict, tag_list, tags_for
from ..waiting import TimedOut, poll_until
from .admin import AdminEc2
from .client import CloudError, NotOurs, boto_client, call

NFS_PORT = 2049
# How often a wait says it is still waiting (the first time: at once).
PROGRESS_EVERY = 15.0


def creation_token(cluster: str) -> str:
    return f"cloudjhub-{cluster}-shared"


def shared_group_name(cluster: str) -> str:
    return f"{cluster}-shared"


def nfs_rule(source_group: str) -> dict[str, Any]:
    return {
        "IpProtocol": "tcp",
        "FromPort": NFS_PORT,
        "ToPort": NFS_PORT,
        "UserIdGroupPairs": [{"GroupId": source_group}],
    }


class SharedStorage:
    """One cluster's EFS file system, its mount targets and its security group."""

    def __init__(
        self,
        ec2: AdminEc2,
        efs: Any,
        timeout: float = 600.0,
        poll: float = 5.0,
        say: Callable[[str], None] | None = None,
    ):
        self.ec2 = ec2
        self.cluster = ec2.cluster
        self.efs = efs
        self.timeout = timeout
        self.poll = poll
        self.say = say

    @classmethod
    def connect(
        cls,
        ec2: AdminEc2,
        region: str | None,
        endpoint_url: str | None,
        timeout: float = 600.0,
        poll: float = 5.0,
        say: Callable[[str], None] | None = None,
    ) -> SharedStorage:
        return cls(ec2, boto_client("efs", region, endpoint_url), timeout, poll, say)

    @property
    def tags(self) -> dict[str, str]:
        return tags_for(self.cluster, Role.SHARED)

    # ---- the file system -------------------------------------------------------

    def file_system(self) -> dict[str, Any] | None:
        """The cluster's file system, or None; NotOurs if the token's is not tagged ours."""
        found = call(
            self.efs, "describe_file_systems", CreationToken=creation_token(self.cluster)
        ).get("FileSystems", [])
        if not found:
            return None
        fs: dict[str, Any] = found[0]
        if tag_dict(fs.get("Tags")).get(CLUSTER_TAG) != self.cluster:
            raise NotOurs(
                f"EFS file system {fs['FileSystemId']} has this cluster's creation token but "
                f"is not tagged {CLUSTER_TAG}={self.cluster}; refusing to use or delete it"
            )
        return fs

    def ensure_file_system(self) -> tuple[str, bool]:
        """(file system id, created?): encrypted at rest, tagged, and available."""
        fs = self.file_system()
        created = fs is None
        if fs is None:
            fs = call(
                self.efs,
                "create_file_system",
                CreationToken=creation_token(self.cluster),
                PerformanceMode="generalPurpose",
                Encrypted=True,
                Tags=tag_list(self.tags),
            )
        fs_id = str(fs["FileSystemId"])
        self._wait(f"EFS file system {fs_id} to be available", lambda: self._fs_state(fs_id))
        return fs_id, created

    def arn(self, fs_id: str) -> str:
        found = call(self.efs, "describe_file_systems", FileSystemId=fs_id)["FileSystems"]
        return str(found[0]["FileSystemArn"])

    def put_policy(self, fs_id: str, policy: dict[str, Any]) -> None:
        """Set the file system's resource policy (replacing any). A role made moments
        ago may not be known to EFS yet: IAM is eventually consistent (IAM User Guide,
        "Changes that I make are not always immediately visible"), and EFS refuses a
        principal it cannot resolve (InvalidPolicyException), so that is retried."""
        self._ours(fs_id)
        text = json.dumps(policy)

        def put() -> bool:
            try:
                call(self.efs, "put_file_system_policy", FileSystemId=fs_id, Policy=text)
            except CloudError as exc:
                if exc.code == "InvalidPolicyException" and "principal" in str(exc).lower():
                    return False
                raise
            return True

        self._wait(f"EFS to accept the policy of {fs_id}", put)

    def _fs_state(self, fs_id: str) -> bool:
        found = call(self.efs, "describe_file_systems", FileSystemId=fs_id)["FileSystems"]
        return bool(found) and found[0].get("LifeCycleState") == "available"

    # ---- its security group ----------------------------------------------------

    def ensure_group(self, vpc_id: str, sources: Iterable[str]) -> tuple[str, bool]:
        """The group on the mount targets: NFS from `sources` (the workers' group) only."""
        name = shared_group_name(self.cluster)
        group_id, created = self.ec2.ensure_security_group(
            vpc_id,
            name,
            "cloudjhub shared folder: NFS from the workers",
            {**self.tags, "Name": name},
        )
        self.ec2.authorize_ingress(group_id, [nfs_rule(s) for s in sources])
        return group_id, created

    def group(self) -> dict[str, Any] | None:
        found = [
            g
            for g in self.ec2.security_groups_named([shared_group_name(self.cluster)])
            if tag_dict(g.get("Tags")).get(CLUSTER_TAG) == self.cluster
        ]
        return found[0] if found else None

    # ---- mount targets ---------------------------------------------------------

    def mount_targets(self, fs_id: str) -> list[dict[str, Any]]:
        reply = call(self.efs, "describe_mount_targets", FileSystemId=fs_id)
        return list(reply.get("MountTargets", []))

    def ensure_mount_targets(self, fs_id: str, subnets: Mapping[str, str], group: str) -> list[str]:
        """A mount target in each zone of `subnets` (subnet -> zone) that has none (EFS
        allows one per zone: MountTargetConflict); the ids made now (all available)."""
        have = {m.get("AvailabilityZoneName") for m in self.mount_targets(fs_id)}
        made = []
        for subnet, zone in subnets.items():
            if zone in have:
                continue
            reply = call(
                self.efs,
                "create_mount_target",
                FileSystemId=fs_id,
                SubnetId=subnet,
                SecurityGroups=[group],
            )
            made.append(str(reply["MountTargetId"]))
            have.add(zone)
        self._wait(
            f"the mount targets of {fs_id} to be available",
            lambda: all(m["LifeCycleState"] == "available" for m in self.mount_targets(fs_id)),
        )
        return made

    # ---- deleting ---------------------------------------------------------------

    def delete(self, fs_id: str) -> None:
        """Mount targets, then (once they are gone) the file system, then its group."""
        self._ours(fs_id)
        for target in self.mount_targets(fs_id):
            if target["LifeCycleState"] not in ("deleting", "deleted"):
                call(self.efs, "delete_mount_target", MountTargetId=target["MountTargetId"])
        self._wait(f"the mount targets of {fs_id} to go", lambda: not self.mount_targets(fs_id))
        call(self.efs, "delete_file_system", FileSystemId=fs_id)
        group = self.group()
        if group is not None:
            self._wait(
                f"security group {group['GroupId']} to be free",
                lambda: self._try_delete_group(group["GroupId"]),
            )

    def _try_delete_group(self, group_id: str) -> bool:
        try:
            self.ec2.delete_security_group(group_id)
        except CloudError as exc:
            if exc.code == "DependencyViolation":  # the mount targets' interfaces linger
                return False
            raise
        return True

    def release_groups(self, group_ids: list[str]) -> int:
        """Drop the shared group's rules naming the cluster's groups (workers, manager),
        so a destroy that keeps the file system can still delete those groups (a
        re-launch adds the rules again)."""
        group = self.group()
        if group is None or not group_ids:
            return 0
        return self.ec2.revoke_group_references(group["GroupId"], group_ids)

    def _ours(self, fs_id: str) -> None:
        fs = self.file_system()
        if fs is None or fs["FileSystemId"] != fs_id:
            raise NotOurs(f"EFS file system {fs_id} is not cluster {self.cluster}'s")

    def _wait(self, what: str, done: Any) -> None:
        try:
            poll_until(
                done,
                timeout=self.timeout,
                interval=self.poll,
                what=what,
                progress=self._progress(what),
                progress_every=PROGRESS_EVERY,
            )
        except TimedOut as late:
            raise CloudError(str(late)) from late

    def _progress(self, what: str) -> Callable[[object, float], None] | None:
        say = self.say
        if say is None:
            return None
        return lambda _value, elapsed: say(f"  waiting for {what} ({elapsed:.0f}s so far)")
