"""The printed manager policy passes two IAM linters, parliament and cloudsplaining.

Each shape the options give the policy is printed through the CLI and handed to
parliament (`analyze_policy_string`, with its community auditors) and to
cloudsplaining (`scan_policy`, its scan of one policy document). The test fails on
any finding above LOW, and on parliament's RESOURCE_STAR, which is LOW but names an
action granted on every resource although it can be scoped: what the old policy
did with `ec2:Describe*` and GetConsoleOutput. parliament's SENSITIVE_ACCESS
auditor (HIGH) is told which EC2 reads return secrets, so that granting any of them
at all is a finding. The documented false positives are in FALSE_POSITIVES, each
with why; the tests at the end show that the check fails on the old read statement
and that each false-positive rule excuses nothing else.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cloudsplaining.command.scan_policy_file import scan_policy

from cloudjhub.cli import main

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports pkg_resources, which warns
    import parliament
    from parliament import is_arn_match

KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CASES = {
    "defaults": [],
    "scoped": ["--region", "eu-west-1", "--account", "123456789012"],
    "custom-ami": [
        "--worker-ami",
        "ami-0123456789abcdef0",
        "--worker-ami",
        "ami-12345678",
        "--instance-type",
        "t3.large",
        "--instance-type",
        "m5.*",
    ],
    "kms": ["--region", "eu-west-1", "--kms-key-arn", KEY],
    "china": ["--region", "cn-north-1", "--account", "123456789012"],
    "shared-storage": [
        "--shared-storage",
        "efs",
        "--region",
        "eu-west-1",
        "--account",
        "123456789012",
    ],
    "backup-role": ["--backup-role", "--region", "eu-west-1", "--account", "123456789012"],
}

# EC2 reads that return secrets: user data (of instances, of launch templates) and
# Windows passwords. The hub needs none of them.
SECRET_READS = (
    "ec2:DescribeInstanceAttribute",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetLaunchTemplateData",
    "ec2:GetPasswordData",
)
PARLIAMENT_CONFIG = {"SENSITIVE_ACCESS": {"resources": [{a: ["*"]} for a in SECRET_READS]}}
_COMMUNITY = Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"
# parliament's own severities, and its community auditors' (which its CLI merges in).
PARLIAMENT_SEVERITY = {
    issue: settings["severity"]
    for issue, settings in {**yaml.safe_load(_COMMUNITY.read_text()), **parliament.config}.items()
}
LEVELS = ("MUTE", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
ALSO_FAILING = {"RESOURCE_STAR"}


@dataclass(frozen=True)
class Finding:
    tool: str
    issue: str
    severity: str
    detail: Any


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowing(policy: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [
        s
        for s in policy["Statement"]
        if s["Effect"] == "Allow" and action in as_list(s.get("Action", []))
    ]


# ---- documented false positives ---------------------------------------------------------


def split_by_resource_type(finding: Finding, policy: dict[str, Any]) -> bool:
    """RESOURCE_MISMATCH: parliament wants each statement to list every resource type
    its action requires, judging statements one by one (duo-labs/parliament#3, open).
    RunInstances and AttachVolume are split by resource type on purpose, because each
    type takes its own condition keys (ec2:InstanceType exists only for the instance,
    aws:RequestTag only for what is created) and a condition key missing from a
    resource's request context fails the whole statement for it. A false positive when,
    for each missing type, another statement of the policy allows the action on it."""
    return all(
        any(
            is_arn_match("", missing["required_format"], resource)
            for statement in allowing(policy, missing["action"])
            for resource in as_list(statement["Resource"])
        )
        for missing in finding.detail
    )


def ebs_key_grants(finding: Finding, policy: dict[str, Any]) -> bool:
    """PERMISSIONS_MANAGEMENT_ACTIONS for kms:CreateGrant, which parliament flags
    whatever its conditions: EBS needs it to use a customer managed key (AWS's EBS
    encryption requirements), and each statement allowing it names one key and
    requires kms:GrantIsForAWSResource, so only an AWS service acting for the hub gets
    a grant, never a principal the hub names."""
    grants = allowing(policy, "kms:CreateGrant")
    return (
        finding.detail == {"actions": ["kms:creategrant"]}
        and bool(grants)
        and all(
            s.get("Condition") == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
            and isinstance(s["Resource"], str)
            and ":kms:" in s["Resource"]
            and ":key/" in s["Resource"]
            and "*" not in s["Resource"]
            for s in grants
        )
    )


def spot_service_linked_role(finding: Finding, policy: dict[str, Any]) -> bool:
    """PERMISSIONS_MANAGEMENT_ACTIONS for iam:CreateServiceLinkedRole, which parliament
    flags whatever its scope: EC2 makes AWSServiceRoleForEC2Spot on an account's first
    spot request only if the caller may (EC2 User Guide, "Service-linked role for Spot
    Instance requests"), and each statement allowing it names that one role and
    requires iam:AWSServiceName spot.amazonaws.com, so no other role can be made."""
    made = allowing(policy, "iam:CreateServiceLinkedRole")
    return (
        finding.detail == {"actions": ["iam:createservicelinkedrole"]}
        and bool(made)
        and all(
            s.get("Condition") == {"StringLike": {"iam:AWSServiceName": "spot.amazonaws.com"}}
            and isinstance(s["Resource"], str)
            and s["Resource"].endswith(
                ":role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"
            )
            for s in made
        )
    )


def workers_role_pass(finding: Finding, policy: dict[str, Any]) -> bool:
    """PERMISSIONS_MANAGEMENT_ACTIONS for iam:PassRole, and PRIVILEGE_ESCALATION's
    CreateEC2WithExistingIP (PassRole with RunInstances), which parliament flags
    whatever their scope: with a shared folder the hub launches workers with the
    workers' role (launch/iam_shared.py), whose only permissions are the EFS client
    actions on the cluster's file system. Each statement allowing PassRole names that
    one role, with no wildcard, and only for EC2 (iam:PassedToService), so the hub
    can hand no other role to anything."""
    passes = allowing(policy, "iam:PassRole")
    scoped = bool(passes) and all(
        s.get("Condition") == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
        and isinstance(s["Resource"], str)
        and s["Resource"].endswith(":role/alpha-workers")
        and "*" not in s["Resource"].rsplit(":", 1)[1]
        for s in passes
    )
    return scoped and finding.detail in (
        {"actions": ["iam:passrole"]},
        {"type": "CreateEC2WithExistingIP", "actions": ["iam:passrole", "ec2:runinstances"]},
    )


FALSE_POSITIVES: dict[str, Callable[[Finding, dict[str, Any]], bool]] = {
    "RESOURCE_MISMATCH": split_by_resource_type,
    "PERMISSIONS_MANAGEMENT_ACTIONS": lambda finding, policy: (
        ebs_key_grants(finding, policy)
        or spot_service_linked_role(finding, policy)
        or workers_role_pass(finding, policy)
    ),
    "PRIVILEGE_ESCALATION": workers_role_pass,
}


# ---- the check --------------------------------------------------------------------------


def parliament_findings(text: str) -> list[Finding]:
    policy = parliament.analyze_policy_string(
        text, include_community_auditors=True, config=PARLIAMENT_CONFIG
    )
    return [
        Finding(
            "parliament",
            f.issue,
            PARLIAMENT_SEVERITY[f.issue],
            f.detail or {k: v for k, v in f.location.items() if k != "filepath"},
        )
        for f in policy.findings
    ]


def cloudsplaining_findings(text: str) -> list[Finding]:
    results = scan_policy(json.loads(text))
    return [
        Finding("cloudsplaining", name, result["severity"].upper(), result["findings"])
        for name, result in results.items()
        if isinstance(result, dict) and result["findings"]
    ]


def failures(text: str) -> list[Finding]:
    """What fails the test: above LOW or in ALSO_FAILING, and not a documented false positive."""
    policy = json.loads(text)
    found = parliament_findings(text) + cloudsplaining_findings(text)
    return [
        f
        for f in found
        if (LEVELS.index(f.severity) > LEVELS.index("LOW") or f.issue in ALSO_FAILING)
        and not (f.issue in FALSE_POSITIVES and FALSE_POSITIVES[f.issue](f, policy))
    ]


def printed(args: list[str]) -> str:
    result = CliRunner().invoke(main, ["iam-policy", "alpha", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(autouse=True)
def no_instance_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no instance_config.json is, so the defaults are the built-in ones."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("args", CASES.values(), ids=CASES.keys())
def test_printed_policy_passes_parliament_and_cloudsplaining(args: list[str]) -> None:
    text = printed(args)

    assert failures(text) == []
    # The false-positive rules were needed (so they are exercised), and only those.
    assert {f.issue for f in parliament_findings(text)} <= set(FALSE_POSITIVES)


def test_the_check_fails_on_the_old_read_statement() -> None:
    """The old policy's first statement, in place of the two that replace it."""
    policy = json.loads(printed([]))
    reads = ("DescribeOnlyWhatTheHubReads", "ConsoleOfClusterWorkers")
    old = {
        "Sid": "ReadInstancesAndConsole",
        "Effect": "Allow",
        "Action": ["ec2:Describe*", "ec2:GetConsoleOutput"],
        "Resource": "*",
    }
    policy["Statement"] = [old] + [s for s in policy["Statement"] if s["Sid"] not in reads]

    failed = failures(json.dumps(policy))

    assert {f.issue for f in failed} == {"SENSITIVE_ACCESS", "RESOURCE_STAR"}
    secrets = [f for f in failed if f.issue == "SENSITIVE_ACCESS"]
    assert {f.severity for f in secrets} == {"HIGH"}
    # Describe* includes the user data of every instance and launch template.
    assert {(f.detail["actions"], f.detail["resource"]) for f in secrets} == {
        ("ec2:DescribeInstanceAttribute", "*"),
        ("ec2:DescribeLaunchTemplateVersions", "*"),
    }
    [star] = [f for f in failed if f.issue == "RESOURCE_STAR"]
    assert {"ec2:DescribeInstanceAttribute", "ec2:GetConsoleOutput"} <= set(star.detail)


def _without(sid: str) -> Callable[[dict[str, Any]], None]:
    def change(policy: dict[str, Any]) -> None:
        policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != sid]

    return change


def _add(statement: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(policy: dict[str, Any]) -> None:
        policy["Statement"].append({"Effect": "Allow", **statement})

    return change


def _unconditional_grants(policy: dict[str, Any]) -> None:
    for statement in allowing(policy, "kms:CreateGrant"):
        del statement["Condition"]


@pytest.mark.parametrize(
    ("change", "issue"),
    [
        # No statement allows RunInstances in a subnet: not excused as a split.
        (_without("RunInSubnetsWithNewInterfaces"), "RESOURCE_MISMATCH"),
        # Grants to any principal the hub names: not excused as EBS's.
        (_unconditional_grants, "PERMISSIONS_MANAGEMENT_ACTIONS"),
        (_add({"Action": "ec2:*", "Resource": "*"}), "ServiceWildcard"),
        (
            _add({"Action": ["iam:PassRole", "ec2:RunInstances"], "Resource": "*"}),
            "PrivilegeEscalation",
        ),
        (_add({"Action": "ec2:GetPasswordData", "Resource": "*"}), "SENSITIVE_ACCESS"),
        # Passing any role of the account: not excused as the workers' role.
        (
            _add(
                {
                    "Action": "iam:PassRole",
                    "Resource": "arn:aws:iam::*:role/*",
                    "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
                }
            ),
            "PRIVILEGE_ESCALATION",
        ),
    ],
    ids=[
        "mismatch",
        "grant",
        "service-wildcard",
        "privilege-escalation",
        "secret-read",
        "any-role",
    ],
)
def test_each_rule_can_fail(change: Callable[[dict[str, Any]], None], issue: str) -> None:
    policy = json.loads(printed(CASES["kms"]))
    change(policy)

    assert issue in {f.issue for f in failures(json.dumps(policy))}
