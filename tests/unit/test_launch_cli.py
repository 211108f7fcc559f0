"""`cloudjhub launch` up to the point where it would create something, against moto.

What a user sees when the launch cannot start: a cloud failure (no credentials,
an EC2 error while planning) is one line and exit 1; bad input (an endpoint
that is not a URL too) is exit 2 naming the option or field; without a terminal and
without --yes it refuses, and nothing is created. No test here gets past the
confirmation: the launch itself is covered by tests/system/test_launch.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner, Result

from cloudjhub.aws import client as ec2_module
from cloudjhub.aws.admin import instance_profile_exists
from cloudjhub.aws.client import CloudError, Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.commands import cloud_options
from cloudjhub.commands.launch import launch
from cloudjhub.launch.cluster import Launch
from cloudjhub.tags import CLUSTER_TAG
from tests.helpers import inventory as shared_inventory
from tests.unit.conftest import REGION, Network, SshKey

CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture
def args(
    ec2: LocalCloudEc2,
    network: Network,
    key_name: str,
    worker_ami: str,
    ssh_key: SshKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """A launch of cluster `alpha` that passes preflight: a public subnet routed to an
    internet gateway next to the private one, a base image, a key pair and its file."""
    for name in list(os.environ):
        if name.startswith("CLOUDJHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no instance_config.json here: the defaults
    tags = {CLUSTER_TAG: "alpha", "Name": "alpha-public"}
    public = ec2.ensure_subnet(network.vpc_id, "10.42.2.0/24", tags)
    ec2.ensure_internet_route(network.vpc_id, public, tags)
    return [
        "launch",
        "alpha",
        image_like(ec2, worker_ami, *UBUNTU_2404),
        network.subnet_id,
        public,
        "--key-name",
        key_name,
        "--key-file",
        str(ssh_key.private),
        "--admin-cidr",
        "203.0.113.7/32",
        "--allow-http",
    ]


# (Name, Description) as the publishers write them.
UBUNTU_2404 = (
    "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240423",
    "Canonical, Ubuntu, 24.04, amd64 noble image",
)


def image_like(ec2: LocalCloudEc2, source: str, name: str, description: str) -> str:
    """A copy of one of moto's images (its architecture, virtualization and 15 GiB root
    snapshot) under another name: moto has no image of a supported OS."""
    copied = ec2.client.copy_image(
        SourceImageId=source, SourceRegion=REGION, Name=name, Description=description
    )
    return str(copied["ImageId"])


def run(*argv: str, input: str | None = None) -> Result:
    # catch_exceptions=False: an exception that escapes the command fails the test
    # with its traceback instead of passing as "exit code 1".
    return CliRunner().invoke(main, list(argv), input=input, catch_exceptions=False)


def lines(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def inventory(ec2: LocalCloudEc2, live_only: bool = False) -> dict[str, Any]:
    return shared_inventory(ec2.client, live_only)


def recording_clients(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Record the endpoint the CLI asks for, and talk to in-process moto regardless
    (AWS's own URL, which moto intercepts, overrides any AWS_ENDPOINT_URL)."""
    endpoints: list[str | None] = []
    inner = ec2_module.make_client

    def make_client(region: str | None, endpoint_url: str | None = None) -> Any:
        endpoints.append(endpoint_url)
        return inner(region, f"https://ec2.{REGION}.amazonaws.com")

    monkeypatch.setattr(ec2_module, "make_client", make_client)
    return endpoints


# ---- cloud failures: one line, exit 1 ----------------------------------------------------


def test_no_credentials_is_one_line_and_exit_1(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254

    result = run(*args, "--yes")

    assert result.exit_code == 1, result.output
    [line] = lines(result)
    assert line.startswith("error: ") and "Unable to locate credentials" in line
    assert "AWS credentials" in line and "nothing was created" in line
    assert "Traceback" not in result.output


def test_instance_profile_check_wraps_botocore_errors(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(CloudError) as no_credentials:
        instance_profile_exists("cloudjhub-manager", REGION)
    with pytest.raises(CloudError) as bad_endpoint:
        instance_profile_exists("cloudjhub-manager", REGION, "not a url")

    assert no_credentials.value.code == "NoCredentialsError"
    assert "Unable to locate credentials" in str(no_credentials.value)
    assert "not a url" in str(bad_endpoint.value)


def test_an_endpoint_that_is_not_a_url_is_one_line_and_exit_2(
    args: list[str], ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = inventory(ec2)

    given = run(*args, "--yes", "--aws-endpoint", "not a url")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url either")
    from_env = run(*args, "--yes")

    for result, url in ((given, "not a url"), (from_env, "not a url either")):
        assert result.exit_code == 2, result.output  # bad input: the user named it
        [line] = lines(result)
        assert line.startswith("error: ") and f"Invalid endpoint: {url}" in line
    assert inventory(ec2) == before


def test_an_ec2_error_while_planning_is_one_line_and_exit_1(
    args: list[str], ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Preflight never lists instances; the plan does (to reuse a manager)."""
    inner = ec2_module.make_client

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Error": {"Code": "UnauthorizedOperation", "Message": "not for you"}}
        return AWSResponse("https://ec2.amazonaws.com/", 403, {}, None), error

    def make_client(region: str | None, endpoint_url: str | None = None) -> Any:
        client = inner(region, endpoint_url)
        client.meta.events.register("before-call.ec2.DescribeInstances", refuse)
        return client

    monkeypatch.setattr(ec2_module, "make_client", make_client)
    before = inventory(ec2)

    result = run(*args, "--dry-run")

    assert result.exit_code == 1, result.output
    [line] = lines(result)
    assert "UnauthorizedOperation: not for you" in line and "nothing was created" in line
    assert inventory(ec2) == before


# ---- confirmation ------------------------------------------------------------------------


def test_without_a_terminal_or_yes_it_refuses_and_creates_nothing(
    args: list[str], ec2: LocalCloudEc2, tmp_path: Path
) -> None:
    before = inventory(ec2)

    result = run(*args, input="y\n")  # a "y" on a pipe is not a person's answer

    assert result.exit_code == 1
    assert "security group alpha-manager" in result.output  # the plan was shown first
    assert "stdin is not a terminal" in result.output and "--yes" in result.output
    assert "Traceback" not in result.output
    assert inventory(ec2) == before
    assert not (tmp_path / "server_config.json").exists()


def test_a_person_who_declines_creates_nothing(
    args: list[str], ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_options, "stdin_is_tty", lambda: True)
    before = inventory(ec2)

    result = run(*args, input="n\n")

    assert result.exit_code == 1
    assert "Create these resources for cluster alpha?" in result.output
    assert "not confirmed; nothing was changed" in result.output
    assert inventory(ec2) == before


def test_dry_run_needs_no_confirmation(
    args: list[str], ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = recording_clients(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    before = inventory(ec2)

    result = run(*args, "--dry-run")
    monkeypatch.setenv("CLOUDJHUB_AWS_ENDPOINT", "http://127.0.0.2:4566")
    chosen = run(*args, "--dry-run")
    given = run(*args, "--dry-run", "--aws-endpoint", "http://127.0.0.3:4566")

    for done in (result, chosen, given):
        assert done.exit_code == 0, done.output
        assert "--dry-run: nothing was created" in done.output
        assert "stdin is not a terminal" not in done.output
    assert "worker image alpha-worker-<date>" in result.output
    # --aws-endpoint defaults to CLOUDJHUB_AWS_ENDPOINT, then boto3's AWS_ENDPOINT_URL.
    assert endpoints == [
        "http://127.0.0.1:4566",
        "http://127.0.0.2:4566",
        "http://127.0.0.3:4566",
    ]
    assert inventory(ec2) == before


# ---- bad input: exit 2, naming it -------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--ssh-port", "0"], "ssh_port"),
        (["--admin-cidr", "203.0.113.7/99"], "admin_cidr"),
        (["--timeout", "0"], "timeout"),
        (["--worker-ebs-size", "4"], "WORKER_EBS_SIZE"),
        (["--warm-pool-size", "-1"], "WARM_POOL_SIZE"),
        (["--private-subnets", "subnet-0abc,sub$(id)"], "SUBNET_IDS"),
        (["--worker-ebs-size", "lots"], "'--worker-ebs-size'"),
        (["--timeout", "soon"], "'--timeout'"),
        (["--connect-via", "carrier-pigeon"], "'--connect-via'"),
        (["--key-name", "nope"], "--key-name nope"),
    ],
)
def test_bad_option_values_exit_2_naming_the_option(
    args: list[str], ec2: LocalCloudEc2, extra: list[str], named: str
) -> None:
    before = inventory(ec2)

    result = run(*args, "--yes", *extra)

    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert inventory(ec2) == before


def test_bad_option_value_from_the_environment_exits_2(
    args: list[str], ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDJHUB_TIMEOUT", "-5")
    monkeypatch.setenv("CLOUDJHUB_SSH_PORT", "22")

    result = run(*args, "--yes")

    assert result.exit_code == 2, result.output
    [line] = lines(result)
    assert line.startswith("error: ") and "'--timeout' (env var: 'CLOUDJHUB_TIMEOUT')" in line


def test_a_bad_cluster_name_exits_2_before_any_aws_call(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = recording_clients(monkeypatch)
    argv = list(args)
    argv[1] = "Alpha_1"

    result = run(*argv, "--yes")

    assert result.exit_code == 2
    assert "cluster" in result.output and "'Alpha_1'" in result.output
    assert endpoints == []


# ---- sign-in and transport: safe unless told otherwise -----------------------------------


def test_plain_http_needs_allow_http(
    args: list[str], ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endpoints = recording_clients(monkeypatch)
    before = inventory(ec2)
    without = [a for a in args if a != "--allow-http"]

    refused = run(*without, "--yes")

    assert refused.exit_code == 2, refused.output
    [line] = lines(refused)
    assert line.startswith("error: no --ssl-cert/--ssl-key: the hub would serve plain HTTP")
    assert "--allow-http" in line and line.endswith("nothing was created")
    assert endpoints == [] and inventory(ec2) == before
    assert not list(tmp_path.glob("cloudjhub-*"))
    allowed = run(*args, "--dry-run")
    assert allowed.exit_code == 0, allowed.output


def test_unknown_authenticator_is_one_line_and_exit_2(
    args: list[str], ec2: LocalCloudEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = recording_clients(monkeypatch)
    before = inventory(ec2)

    result = run(*args, "--yes", "--authenticator", "saml")

    assert result.exit_code == 2, result.output
    assert lines(result) == [
        "error: --authenticator 'saml': unknown; use one of native, shared-password, github, "
        "google, generic-oauth, lti13"
    ]
    assert endpoints == [] and inventory(ec2) == before


def test_sign_in_is_per_user_unless_a_shared_password_is_asked_for(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    from cloudjhub.launch import cluster

    def plan(_ec2: Any, opts: Any) -> list[str]:
        seen.append(opts.authenticator)
        return ["nothing"]

    monkeypatch.setattr(cluster, "plan", plan)
    assert run(*args, "--dry-run").exit_code == 0
    assert run(*args, "--dry-run", "--authenticator", "shared-password").exit_code == 0
    monkeypatch.setenv("CLOUDJHUB_AUTHENTICATOR", "shared-password")
    assert run(*args, "--dry-run").exit_code == 0
    assert seen == ["native", "shared-password", "shared-password"]
    helped = CliRunner().invoke(main, ["launch", "--help"], terminal_width=100).output
    flat = " ".join(helped.split())
    assert "native (default)" in flat and "admin approves" in flat
    assert "whoever knows it can sign in as ANY user" in flat
    assert "--allow-http" in flat and "in clear" in flat


# ---- every option that takes a value can come from CLOUDJHUB_<OPTION> --------------------


def test_every_value_option_has_a_cloudjhub_variable() -> None:
    value_options = [
        p
        for p in launch.params
        # --client-secret is there only to refuse a secret on the command line.
        if isinstance(p, click.Option) and not p.is_flag and p.opts and not p.hidden
    ]
    assert {p.opts[0] for p in value_options} >= {
        "--timeout",
        "--output-dir",
        "--instance-config",
        "--region",
        "--aws-endpoint",
        "--key-name",
    }
    for option in value_options:
        expected = "CLOUDJHUB_" + option.opts[0].lstrip("-").replace("-", "_").upper()
        envvars = [option.envvar] if isinstance(option.envvar, str) else option.envvar
        assert envvars and envvars[0] == expected, option.opts
        assert option.show_envvar, option.opts
    assert launch.params[0].envvar == "CLOUDJHUB_CLUSTER"
    helped = CliRunner().invoke(main, ["launch", "--help"], terminal_width=200)
    for variable in ("CLOUDJHUB_TIMEOUT", "CLOUDJHUB_OUTPUT_DIR", "AWS_ENDPOINT_URL"):
        assert variable in helped.output


# ---- the builder's route out -------------------------------------------------------------


@pytest.mark.parametrize(
    ("connect_via", "subnet_arg", "public_ip"),
    [("public", 4, True), ("private", 3, False)],
)
def test_the_builder_has_a_route_out_either_way_it_is_reached(
    args: list[str],
    ec2: LocalCloudEc2,
    monkeypatch: pytest.MonkeyPatch,
    connect_via: str,
    subnet_arg: int,
    public_ip: bool,
) -> None:
    """Reached at its public IP, the builder has one (the public subnet's internet
    gateway carries only such traffic); reached from inside the VPC, it is in the
    private subnet, behind its NAT gateway. The launch stops once it runs."""
    runs: list[dict[str, Any]] = []
    inner = ec2_module.make_client

    def make_client(region: str | None, endpoint_url: str | None = None) -> Any:
        client = inner(region, endpoint_url)
        client.meta.events.register(
            "provide-client-params.ec2.RunInstances", lambda params, **_: runs.append(params)
        )
        return client

    def provision(_launch: Launch, builder: Instance) -> None:
        raise CloudError(f"stopping at builder {builder.id}")

    monkeypatch.setattr(ec2_module, "make_client", make_client)
    monkeypatch.setattr(Launch, "_provision_builder", provision)
    before = inventory(ec2)

    result = run(*args, "--yes", "--connect-via", connect_via)

    assert result.exit_code == 1 and "stopping at builder" in result.output, result.output
    [builder] = runs
    [interface] = builder["NetworkInterfaces"]
    assert interface["SubnetId"] == args[subnet_arg]
    assert interface["AssociatePublicIpAddress"] is public_ip
    assert inventory(ec2, live_only=True) == {**before, "instances": []}
