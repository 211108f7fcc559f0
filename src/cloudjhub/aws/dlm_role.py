"""The account's default execution role for Data Lifecycle Manager, made when
missing, as `aws dlm create-default-role` makes it: AWSDataLifecycleManagerDefaultRole,
trusted by dlm.amazonaws.com, with AWS's managed policy
service-role/AWSDataLifecycleManagerServiceRole (DLM User Guide, "AWS managed
policies for Amazon Data Lifecycle Manager" and "Default IAM service roles").

The role is the account's, not the cluster's: it is never deleted by cloudjhub.
Making it needs iam:CreateRole, which cannot limit the trust policy its caller
writes, so the launcher's least-privilege policy leaves it out: an identity without
it is told to have the role made once by an account admin.
"""

from __future__ import annotations

import json
from typing import Any

from .backups import DEFAULT_BACKUP_ROLE, partition_of
from .client import CloudError, boto_client, call

MANAGED_POLICY = "service-role/AWSDataLifecycleManagerServiceRole"
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
MAKE_IT_ONCE = (
    f"DLM's default role {DEFAULT_BACKUP_ROLE} needs {{what}}, which this identity may "
    "not do: have an account admin run `aws dlm create-default-role --resource-type "
    "snapshot` once, or pass --backup-role ARN"
)


def managed_policy_arn(region: str | None) -> str:
    return f"arn:{partition_of(region)}:iam::aws:policy/{MANAGED_POLICY}"


def ensure_default_role(
    region: str | None, endpoint_url: str | None, trust: dict[str, Any]
) -> tuple[str, bool]:
    """(the default role's ARN, whether it was made now); a role left half-made by an
    earlier failed run (no managed policy attached) is completed."""
    iam = boto_client("iam", region, endpoint_url)
    made = False
    try:
        arn = str(call(iam, "get_role", RoleName=DEFAULT_BACKUP_ROLE)["Role"]["Arn"])
    except CloudError as exc:
        if exc.code != "NoSuchEntity":
            raise
        arn, made = _create(iam, trust)
    _attach_managed_policy(iam, region)
    return arn, made


def _create(iam: Any, trust: dict[str, Any]) -> tuple[str, bool]:
    try:
        made = call(
            iam,
            "create_role",
            RoleName=DEFAULT_BACKUP_ROLE,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="Default role for Amazon Data Lifecycle Manager (made by cloudjhub launch)",
        )
    except CloudError as exc:
        if exc.code == "EntityAlreadyExists":  # another launch made it meanwhile
            found = call(iam, "get_role", RoleName=DEFAULT_BACKUP_ROLE)
            return str(found["Role"]["Arn"]), False
        if exc.code in DENIED:
            raise CloudError(MAKE_IT_ONCE.format(what="making"), exc.code) from exc
        raise
    return str(made["Role"]["Arn"]), True


def _attach_managed_policy(iam: Any, region: str | None) -> None:
    wanted = managed_policy_arn(region)
    attached = call(iam, "list_attached_role_policies", RoleName=DEFAULT_BACKUP_ROLE)
    if any(p.get("PolicyArn") == wanted for p in attached.get("AttachedPolicies", [])):
        return
    try:
        call(iam, "attach_role_policy", RoleName=DEFAULT_BACKUP_ROLE, PolicyArn=wanted)
    except CloudError as exc:
        if exc.code in DENIED:
            raise CloudError(
                MAKE_IT_ONCE.format(what=f"its managed policy {MANAGED_POLICY} attached"),
                exc.code,
            ) from exc
        raise
