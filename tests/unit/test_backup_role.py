"""`launch --backup-schedule` from a clean account: DLM's default role made when
missing (moto's IAM in-process), and the launcher's own least privilege for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloudjhub.aws.backups import Backups, policy_details
from cloudjhub.aws.client import CloudError, boto_client
from cloudjhub.aws.dlm_retry import call_with_new_role
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.backup_schedule import to_dlm
from cloudjhub.cli import main
from cloudjhub.launch.backup_policy import ensure_backup_policy
from cloudjhub.launch.iam_backups import DLM_TRUST_POLICY
from cloudjhub.launch.options import LaunchOptions
from cloudjhub.local.dlm import DlmApi, moto_role_age
from tests.unit.conftest import REGION

ROLE = "AWSDataLifecycleManagerDefaultRole"
MANAGED = "arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"


def _opts(**kwargs: Any) -> LaunchOptions:
    return LaunchOptions(
        cluster="alpha",
        base_ami="ami-12345678",
        private_subnet="subnet-1",
        public_subnet="subnet-2",
        key_name="admin",
        key_file=Path("admin.pem"),
        region=REGION,
        backup_schedule="0 3 * * *",
        **kwargs,
    )


def test_the_backup_step_makes_dlms_default_role_once_when_missing(
    ec2: LocalCloudEc2, local_dlm: tuple[DlmApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # as in an AWS account
    api, _ = local_dlm
    iam = boto_client("iam", REGION)
    said: list[str] = []
    made = ensure_backup_policy(ec2, _opts(), said.append)
    assert made is not None
    role = iam.get_role(RoleName=ROLE)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(trust)
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "dlm.amazonaws.com"}]
    attached = iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [MANAGED]
    assert api.policies[made[0]]["ExecutionRoleArn"] == role["Arn"]
    assert any(ROLE in line for line in said)

    said.clear()
    again = ensure_backup_policy(ec2, _opts(), said.append)  # a re-run: nothing made twice
    assert again is not None and again[0] == made[0]
    assert not any(ROLE in line for line in said)
    assert Backups.connect(ec2, REGION, None).policies() == [made[0]]


def test_a_given_backup_role_makes_no_role(
    ec2: LocalCloudEc2, local_dlm: tuple[DlmApi, str]
) -> None:
    own = "arn:aws:iam::123456789012:role/course-backups"
    made = ensure_backup_policy(ec2, _opts(backup_role=own), lambda _m: None)
    assert made is not None and local_dlm[0].policies[made[0]]["ExecutionRoleArn"] == own
    roles = boto_client("iam", REGION).list_roles()["Roles"]
    assert ROLE not in {r["RoleName"] for r in roles}


def test_the_launchers_backup_permissions_touch_only_that_role() -> None:
    done = CliRunner().invoke(
        main, ["iam-policy", "alpha", "--launcher-backups", "--account", "123456789012"]
    )
    assert done.exit_code == 0, done.output
    statements = json.loads(done.output)["Statement"]
    role = f"arn:aws:iam::123456789012:role/{ROLE}"
    iam = [s for s in statements if any(a.startswith("iam:") for a in _list(s["Action"]))]
    # No CreateRole/AttachRolePolicy: CreateRole cannot limit the trust policy, so the
    # launcher could make the role trust itself and take DLM's snapshot rights.
    assert {a for s in iam for a in _list(s["Action"])} == {
        "iam:GetRole",
        "iam:ListAttachedRolePolicies",
        "iam:PassRole",
    }
    assert {s["Resource"] for s in iam} == {role}
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["PassTheRoleOnlyToDlm"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "dlm.amazonaws.com"}
    }
    for sid in ("CreateThePolicyTaggedForTheCluster", "ChangeOnlyTheClustersPolicy"):
        condition = by_sid[sid]["Condition"]["StringEquals"]
        assert set(condition.values()) == {"alpha"}, sid
    both = CliRunner().invoke(main, ["iam-policy", "alpha", "--launcher-backups", "--backup-role"])
    assert both.exit_code == 2


def _list(action: str | list[str]) -> list[str]:
    return [action] if isinstance(action, str) else action


def test_a_half_made_role_gets_its_managed_policy(
    ec2: LocalCloudEc2, local_dlm: tuple[DlmApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier run that made the role and then failed to attach leaves a role DLM
    cannot use; a re-run must complete it rather than trust GetRole alone."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    iam = boto_client("iam", REGION)
    trust = {"Version": "2012-10-17", "Statement": []}
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    said: list[str] = []
    assert ensure_backup_policy(ec2, _opts(), said.append) is not None
    attached = iam.list_attached_role_policies(RoleName=ROLE)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [MANAGED]
    assert not any(ROLE in line for line in said)  # found, not made


def test_a_launcher_that_may_not_make_the_role_is_told_how_in_one_line(
    ec2: LocalCloudEc2, local_dlm: tuple[DlmApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from cloudjhub.aws import dlm_role
    from cloudjhub.aws.client import CloudError

    real = dlm_role.call

    def denied(client: Any, action: str, *args: Any, **kwargs: Any) -> Any:
        if action == "create_role":  # what AWS answers the least-privilege launcher
            err = {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}
            return real(_Refuses(ClientError(err, "CreateRole")), "create_role", **kwargs)
        return real(client, action, *args, **kwargs)

    monkeypatch.setattr(dlm_role, "call", denied)
    with pytest.raises(CloudError) as caught:
        ensure_backup_policy(ec2, _opts(), lambda _m: None)
    message = str(caught.value)
    assert "aws dlm create-default-role" in message and "--backup-role" in message
    assert "\n" not in message
    assert local_dlm[0].policies == {}  # nothing made


class _Refuses:
    """An IAM client whose CreateRole answers as AWS does to an identity without it."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.meta = boto_client("iam", REGION).meta

    def create_role(self, **_kwargs: Any) -> Any:
        raise self.error


def test_a_role_iam_has_not_spread_yet_is_retried_and_the_launch_says_so(
    ec2: LocalCloudEc2, local_dlm: tuple[DlmApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS's DLM refuses a role made a moment ago (IAM is eventually consistent); the
    local DLM does so under --like-aws, and the backup step waits it out."""
    api, _ = local_dlm
    trust = json.dumps(DLM_TRUST_POLICY)
    role = boto_client("iam", REGION).create_role(RoleName="new", AssumeRolePolicyDocument=trust)
    age = moto_role_age(role["Role"]["Arn"])
    assert age is not None and 0 <= age < 60  # the stand-in reads moto's IAM
    assert moto_role_age("arn:aws:iam::123456789012:role/none") is None
    # The first look finds it brand new (what a loaded test machine cannot time).
    ages = iter([0.0])
    monkeypatch.setattr(api, "young_role_seconds", 5.0)
    monkeypatch.setattr(api, "role_age", lambda arn: next(ages, 100.0))
    said: list[str] = []
    made = ensure_backup_policy(ec2, _opts(backup_role=role["Role"]["Arn"]), said.append)
    assert made is not None and made[0] in api.policies
    waits = [line for line in said if "cannot assume" in line and "role/new" in line]
    assert waits, said
    assert made[1]() == []


def test_the_retry_is_bounded_and_only_for_that_refusal(
    aws: None, local_dlm: tuple[DlmApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, url = local_dlm
    monkeypatch.setattr(api, "young_role_seconds", 1e9)
    monkeypatch.setattr(api, "role_age", lambda arn: 0.0)
    dlm = boto_client("dlm", REGION, url)
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    details = policy_details("alpha", True, to_dlm("0 3 * * *"), 2)
    with pytest.raises(CloudError, match="cannot be assumed by principal"):
        call_with_new_role(
            dlm,
            "create_lifecycle_policy",
            "arn:aws:iam::123456789012:role/new",
            sleep=sleep,
            clock=lambda: now[0],
            Description="d",
            State="ENABLED",
            PolicyDetails=details,
        )
    assert slept == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0] and now[0] <= 60
    with pytest.raises(CloudError, match="Parameter validation failed"):  # not retried
        call_with_new_role(dlm, "create_lifecycle_policy", "arn:x", sleep=sleep)
    assert len(slept) == 9
