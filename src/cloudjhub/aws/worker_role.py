"""The workers' IAM role and instance profile (`CLUSTER-workers`, made only with shared
storage) and the role behind an instance profile (the manager's, named in the shared
folder's file system policy). The documents come from the caller (launch/iam_shared.py).

A role of that name is ours only if it carries the cluster's tag: launch refuses to
reuse, and destroy to delete, anyone else's.
"""

from __future__ import annotations

import json
from typing import Any

from ..tags import CLUSTER_TAG, Role, tag_list, tags_for, workers_role_name
from .client import CloudError, NotOurs, boto_client, call

GONE = "NoSuchEntity"


class WorkersRole:
    """One cluster's workers' role and its instance profile of the same name."""

    def __init__(self, cluster: str, iam: Any) -> None:
        self.cluster = cluster
        self.name = workers_role_name(cluster)
        self.iam = iam

    @classmethod
    def connect(cls, cluster: str, region: str | None, endpoint_url: str | None) -> WorkersRole:
        return cls(cluster, boto_client("iam", region, endpoint_url))

    def role(self) -> dict[str, Any] | None:
        """The role, or None; NotOurs if a role of that name is not tagged ours."""
        try:
            role: dict[str, Any] = call(self.iam, "get_role", RoleName=self.name)["Role"]
        except CloudError as exc:
            if exc.code == GONE:
                return None
            raise
        tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
        if tags.get(CLUSTER_TAG) != self.cluster:
            raise NotOurs(
                f"IAM role {self.name} is not tagged {CLUSTER_TAG}={self.cluster}; "
                "refusing to use or delete it"
            )
        return role

    def ensure(self, trust: dict[str, Any], policy: dict[str, Any]) -> tuple[str, bool]:
        """(the role's ARN, whether this call made it): role, its inline policy (set
        again each time, so a re-run fixes a changed one) and its instance profile."""
        role = self.role()
        created = role is None
        if role is None:
            role = call(
                self.iam,
                "create_role",
                RoleName=self.name,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description="cloudjhub workers: mount the cluster's shared folder (EFS)",
                Tags=tag_list(tags_for(self.cluster, Role.SHARED, name=self.name)),
            )["Role"]
        call(
            self.iam,
            "put_role_policy",
            RoleName=self.name,
            PolicyName=POLICY_NAME,
            PolicyDocument=json.dumps(policy),
        )
        self._ensure_profile()
        return str(role["Arn"]), created

    def _ensure_profile(self) -> None:
        try:
            profile = call(self.iam, "get_instance_profile", InstanceProfileName=self.name)
        except CloudError as exc:
            if exc.code != GONE:
                raise
            profile = call(self.iam, "create_instance_profile", InstanceProfileName=self.name)
        roles = [r.get("RoleName") for r in profile["InstanceProfile"].get("Roles", [])]
        if self.name not in roles:
            call(
                self.iam,
                "add_role_to_instance_profile",
                InstanceProfileName=self.name,
                RoleName=self.name,
            )

    def delete(self) -> None:
        """Profile, inline policy, role; what is already gone is skipped."""
        if self.role() is None:
            self._quietly("delete_instance_profile", InstanceProfileName=self.name)
            return
        self._quietly(
            "remove_role_from_instance_profile", InstanceProfileName=self.name, RoleName=self.name
        )
        self._quietly("delete_instance_profile", InstanceProfileName=self.name)
        self._quietly("delete_role_policy", RoleName=self.name, PolicyName=POLICY_NAME)
        call(self.iam, "delete_role", RoleName=self.name)

    def _quietly(self, action: str, **params: str) -> None:
        try:
            call(self.iam, action, **params)
        except CloudError as exc:
            if exc.code != GONE:
                raise


POLICY_NAME = "cloudjhub-shared-folder"


def profile_role_arns(profile: str, region: str | None, endpoint_url: str | None) -> list[str]:
    """The ARNs of the roles in an instance profile (the manager's)."""
    iam = boto_client("iam", region, endpoint_url)
    found = call(iam, "get_instance_profile", InstanceProfileName=profile)["InstanceProfile"]
    return [str(r["Arn"]) for r in found.get("Roles", [])]
