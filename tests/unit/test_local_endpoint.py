"""The embedded EC2 endpoint of the local cloud takes only its own credentials, and
records which key pairs were made with them (the emulator trusts only those)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from cloudjhub.local import motoserver


@pytest.fixture(scope="module")
def moto_server() -> Iterator[motoserver.LocalEc2]:
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {**motoserver.LOCAL_CREDENTIALS, **motoserver.VALIDATION_FLAGS}.items():
            mp.setenv(var, value)
        for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE"):
            mp.delenv(var, raising=False)
        server = motoserver.LocalEc2()
        server.start()
        try:
            yield server
        finally:
            server.stop()


def client(server: motoserver.LocalEc2, credentials: dict[str, str]) -> Any:
    return boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=server.url,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )


def test_other_credentials_are_refused(moto_server: motoserver.LocalEc2) -> None:
    own = client(moto_server, moto_server.credentials)
    assert own.describe_instances()["ResponseMetadata"]["HTTPStatusCode"] == 200

    for credentials in (
        motoserver.LOCAL_CREDENTIALS,  # the old placeholders
        {**moto_server.credentials, "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
    ):
        with pytest.raises(ClientError) as refused:
            client(moto_server, credentials).describe_instances()
        code = refused.value.response["Error"]["Code"]
        assert code in {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch"}, code


def test_efs_gets_and_deletes_are_signed_as_aws_checks_them(
    moto_server: motoserver.LocalEc2,
) -> None:
    """The shared folder's EFS calls (GET, DELETE) pass with the local cloud's key,
    and still fail with a wrong secret."""

    def efs(credentials: dict[str, str]) -> Any:
        return boto3.client(
            "efs",
            region_name="us-east-1",
            endpoint_url=moto_server.url,
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        )

    own = efs(moto_server.credentials)
    fs_id = own.create_file_system(CreationToken="endpoint-test")["FileSystemId"]
    found = own.describe_file_systems(CreationToken="endpoint-test")["FileSystems"]
    assert [f["FileSystemId"] for f in found] == [fs_id]
    wrong = {**moto_server.credentials, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with pytest.raises(ClientError) as refused:
        efs(wrong).describe_file_systems(FileSystemId=fs_id)
    assert "SignatureDoesNotMatch" in str(refused.value)  # moto answers XML to EFS's JSON
    own.delete_file_system(FileSystemId=fs_id)
    assert own.describe_file_systems()["FileSystems"] == []


def test_the_secret_is_new_for_every_server_and_not_a_placeholder(
    moto_server: motoserver.LocalEc2,
) -> None:
    secret = moto_server.credentials["AWS_SECRET_ACCESS_KEY"]
    assert len(secret) >= 40 and secret != "local-demo"
    assert moto_server.role_credentials["AWS_SECRET_ACCESS_KEY"] != secret


def test_motos_control_api_is_refused(moto_server: motoserver.LocalEc2) -> None:
    """/moto-api/reset-auth would turn authentication off for everyone."""
    reply = requests.post(f"{moto_server.url}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert reply.status_code == 403
    with pytest.raises(ClientError):
        client(moto_server, motoserver.LOCAL_CREDENTIALS).describe_instances()


def test_only_key_pairs_made_with_the_local_clouds_credentials_are_trusted(
    moto_server: motoserver.LocalEc2, tmp_path: Path
) -> None:
    def public_key(name: str) -> str:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)],
            check=True,
        )
        return (tmp_path / f"{name}.pub").read_text().strip()

    own, role = public_key("own"), public_key("role")
    client(moto_server, moto_server.credentials).import_key_pair(
        KeyName="own", PublicKeyMaterial=own.encode()
    )
    client(moto_server, moto_server.role_credentials).import_key_pair(
        KeyName="role", PublicKeyMaterial=role.encode()
    )
    # A key that reached moto some other way than through its authenticated API.
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    other = public_key("other")
    ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].import_key_pair("other", other.encode(), {})

    assert motoserver.trusts_key("own", own)
    assert motoserver.trusts_key("role", role)
    assert not motoserver.trusts_key("other", other)
    assert not motoserver.trusts_key("own", other)  # same name, another key
