"""The manager policy's statements for spot workers (a profile with `market: spot`),
added only when a profile uses spot.

A RunInstances with InstanceMarketOptions also creates a spot-instances-request,
which AWS authorizes as a resource of the call and tags from its
TagSpecifications (Service Authorization Reference, Amazon EC2: RunInstances,
resource types; EC2 User Guide, "Grant permission to tag Amazon EC2 resources
during creation"): the hub tags it like the worker, so the policy requires those
tags. The first spot request of an account needs the service-linked role
AWSServiceRoleForEC2Spot; EC2 creates it on that request only if the caller may
(EC2 User Guide, "Service-linked role for Spot Instance requests"): only that
role, only for spot.amazonaws.com.
"""

from __future__ import annotations

from typing import Any

from ..tags import CLUSTER_TAG, ROLE_TAG, Role

SPOT_SERVICE = "spot.amazonaws.com"
SPOT_ROLE = "AWSServiceRoleForEC2Spot"


def spot_statements(cluster: str, part: str, region: str, account: str) -> list[dict[str, Any]]:
    request = f"arn:{part}:ec2:{region}:{account}:spot-instances-request/*"
    requested = {
        f"aws:RequestTag/{CLUSTER_TAG}": cluster,
        f"aws:RequestTag/{ROLE_TAG}": Role.WORKER.value,
    }
    return [
        {
            "Sid": "RunClusterWorkerSpotRequests",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": request,
            "Condition": {"StringEquals": requested},
        },
        {
            "Sid": "TagSpotRequestsAtLaunch",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": request,
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        },
        {
            "Sid": "CreateTheSpotServiceLinkedRole",
            "Effect": "Allow",
            "Action": "iam:CreateServiceLinkedRole",
            "Resource": f"arn:{part}:iam::{account}:role/aws-service-role/{SPOT_SERVICE}/{SPOT_ROLE}",
            "Condition": {"StringLike": {"iam:AWSServiceName": SPOT_SERVICE}},
        },
    ]
