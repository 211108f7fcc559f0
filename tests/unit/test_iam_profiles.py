"""`cloudjhub iam-policy --profiles FILE`: the manager policy for a hub's profiles, through
the CLI: every type a profile names may be launched and resized to; spot statements
(the spot request, its tags at launch, the Spot service-linked role) only when a profile
uses spot; and the printed policy passes the IAM linters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from moto.core import enable_iam_authentication

from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.launch.iam import manager_policy
from tests.unit.test_iam import CLUSTER, hub_client
from tests.unit.test_iam_lint import FALSE_POSITIVES, failures, parliament_findings
from tests.unit.test_unlisted_types import unlisted_profile

SPOT_SIDS = {
    "RunClusterWorkerSpotRequests",
    "TagSpotRequestsAtLaunch",
    "CreateTheSpotServiceLinkedRole",
}
PROFILES: list[dict[str, Any]] = [
    {"display_name": "Small", "slug": "small", "default": True},
    {
        "display_name": "Large",
        "slug": "large",
        "spawner_override": {"worker_instance_type": "m5.large"},
        "profile_options": {
            "size": {
                "display_name": "Size",
                "choices": {
                    "xl": {
                        "display_name": "XL",
                        "spawner_override": {"worker_instance_type": "m5.xlarge"},
                    }
                },
            }
        },
    },
]
SPOT = {
    "display_name": "Cheap",
    "slug": "cheap",
    "spawner_override": {"market": "spot", "worker_instance_type": "c5.large"},
}
UNLISTED = unlisted_profile("t3\\.(small|large)", "{value}")


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no instance_config.json: the built-in defaults


def iam_policy(tmp_path: Path, profiles: list[dict[str, Any]], *args: str) -> Any:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(profiles))
    return CliRunner().invoke(main, ["iam-policy", "alpha", "--profiles", str(path), *args])


def by_sid(stdout: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in json.loads(stdout)["Statement"]}


def test_profiles_types_may_be_launched_and_resized_to_and_no_spot_unless_asked(
    tmp_path: Path,
) -> None:
    result = iam_policy(tmp_path, PROFILES)
    assert result.exit_code == 0, result.output
    statements = by_sid(result.stdout)
    allowed = ["t3.medium", "m5.large", "m5.xlarge"]  # WORKER_INSTANCE_TYPE first
    resize = statements["ResizeClusterWorkersToAllowedTypes"]["Condition"]["StringLike"]
    assert resize == {"ec2:Attribute/InstanceType": allowed}
    run = statements["RunOnlyClusterWorkersWithImdsv2"]["Condition"]["StringLike"]
    assert run == {"ec2:InstanceType": allowed}
    assert not SPOT_SIDS & set(statements)
    assert not any(":iam:" in json.dumps(s) for s in statements.values())


def test_a_spot_profile_adds_the_spot_statements_scoped_to_the_cluster(tmp_path: Path) -> None:
    result = iam_policy(tmp_path, [*PROFILES, SPOT], "--account", "123456789012")
    assert result.exit_code == 0, result.output
    statements = by_sid(result.stdout)
    request = "arn:aws:ec2:*:123456789012:spot-instances-request/*"
    run = statements["RunClusterWorkerSpotRequests"]
    assert (run["Action"], run["Resource"]) == ("ec2:RunInstances", request)
    assert run["Condition"] == {
        "StringEquals": {
            "aws:RequestTag/cloudjhub:cluster": "alpha",
            "aws:RequestTag/cloudjhub:role": "worker",
        }
    }
    tag = statements["TagSpotRequestsAtLaunch"]
    assert (tag["Action"], tag["Resource"]) == ("ec2:CreateTags", request)
    assert tag["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    role = statements["CreateTheSpotServiceLinkedRole"]
    assert role["Action"] == "iam:CreateServiceLinkedRole"
    assert role["Resource"] == (
        "arn:aws:iam::123456789012:role/aws-service-role/spot.amazonaws.com/"
        "AWSServiceRoleForEC2Spot"
    )
    assert role["Condition"] == {"StringLike": {"iam:AWSServiceName": "spot.amazonaws.com"}}
    assert (
        "c5.large"
        in statements["ResizeClusterWorkersToAllowedTypes"]["Condition"]["StringLike"][
            "ec2:Attribute/InstanceType"
        ]
    )
    # the IAM linters' check, as for every printed policy
    assert failures(result.stdout) == []
    assert {f.issue for f in parliament_findings(result.stdout)} <= set(FALSE_POSITIVES)


def test_an_unlisted_type_needs_the_admin_to_name_the_types(tmp_path: Path) -> None:
    refused = iam_policy(tmp_path, [*PROFILES, UNLISTED])
    assert refused.exit_code == 2
    assert refused.output == (
        "error: --profiles: profile 'any' option 'kind' lets users name an instance type; "
        "give the types it allows with --instance-type\n"
    )
    named = iam_policy(
        tmp_path,
        [*PROFILES, UNLISTED],
        "--instance-type",
        "t3.small",
        "--instance-type",
        "t3.large",
    )
    assert named.exit_code == 0, named.output
    run = by_sid(named.stdout)["RunOnlyClusterWorkersWithImdsv2"]["Condition"]["StringLike"]
    assert run == {"ec2:InstanceType": ["t3.small", "t3.large", "m5.large", "m5.xlarge"]}


def test_a_bad_profiles_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = iam_policy(tmp_path, [{"slug": "nameless"}])
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert line.startswith("error: --profiles: ") and "profile 'nameless'" in line


def test_the_linters_still_flag_a_service_linked_role_for_any_service(tmp_path: Path) -> None:
    result = iam_policy(tmp_path, [SPOT])
    policy = json.loads(result.stdout)
    for statement in policy["Statement"]:
        if statement["Sid"] == "CreateTheSpotServiceLinkedRole":
            statement["Resource"] = "*"
            del statement["Condition"]
    assert "PERMISSIONS_MANAGEMENT_ACTIONS" in {f.issue for f in failures(json.dumps(policy))}


def test_hub_credentials_with_the_spot_policy_launch_a_tagged_spot_worker(
    ec2: LocalCloudEc2, spec: WorkerSpec
) -> None:
    """Action-level, as moto evaluates policies (test_iam.action_level); the spot request
    is tagged like its worker, which the policy's resource condition requires."""
    hub = LocalCloudEc2(CLUSTER, hub_client(manager_policy(CLUSTER, spot=True)))
    sent: list[dict[str, Any]] = []
    hub.client.meta.events.register(
        "provide-client-params.ec2.RunInstances", lambda params, **_: sent.append(params)
    )
    with enable_iam_authentication():
        worker = hub.launch_worker("ann", dataclasses.replace(spec, market="spot"), "t-spot-1")
    assert worker.spot
    [params] = sent
    tagged = {t["ResourceType"]: t["Tags"] for t in params["TagSpecifications"]}
    assert tagged["spot-instances-request"] == tagged["instance"]
    assert {"Key": "cloudjhub:cluster", "Value": CLUSTER} in tagged["spot-instances-request"]
