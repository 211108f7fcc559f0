"""The account's default execution role for Data Lifecycle Manager, made when
missing, as `aws dlm create-default-role` makes it: AWSDataLifecycleManagerDefaultRole,
trusted by dlm.amazonaws.com, with AWS's managed policy
service-role/AWSDataLifecycleManagerServiceRole (DLM User Guide, "AWS managed
policies for Amazon Data Lifecycle Manager" and "Default IAM service roles").

The role is the account's, not the cluster's: it is never deleted by cloudjhub.
"""

from __future__ import annotations

import json
from typing import Any

from .backups import DEFAULT_BACKUP_ROLE, partition_of
from .client import CloudError, boto_client, call

MANAGED_POLICY = "service-role/AWSDataLifecycleManagerServiceRole"


def managed_policy_arn(region: str | None) -> str:
    return f"arn:{partition_of(region)}:iam::aws:policy/{MANAGED_POLICY}"


def ensure_default_role(
    region: str | None, endpoint_url: str | None, trust: dict[str, Any]
) -> tuple[str, bool]:
    """(the default role's ARN, whether it was made now)."""
    iam = boto_client("iam", region, endpoint_url)
    try:
        found = call(iam, "get_role", RoleName=DEFAULT_BACKUP_ROLE)
    except CloudError as exc:
        if exc.code != "NoSuchEntity":
            raise
    else:
        return str(found["Role"]["Arn"]), False
    made = call(
        iam,
        "create_role",
        RoleName=DEFAULT_BACKUP_ROLE,
        AssumeRolePolicyDocument=json.dumps(trust),
        Description="Default role for Amazon Data Lifecycle Manager (made by cloudjhub launch)",
    )
    call(
        iam,
        "attach_role_policy",
        RoleName=DEFAULT_BACKUP_ROLE,
        PolicyArn=managed_policy_arn(region),
    )
    return str(made["Role"]["Arn"]), True
