"""Sign-in with the school's accounts (issue 12): the options of `launch` and
`setup-manager`, refused whole before any AWS call or SSH when wrong, and the hub
config they become (oauthenticator, ltiauthenticator, the TA role, the service
of `cloudjhub users`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from traitlets.config import Config

from cloudjhub.cli import main
from cloudjhub.hub.apply import apply
from cloudjhub.hub.signin import TA_ROLE, USERS_SCOPES, USERS_SERVICE, ta_scopes
from cloudjhub.launch.manager_setup import SetupRequest, setup_manager
from cloudjhub.launch.manager_setup import hub_settings as manager_settings
from cloudjhub.launch.signin import SignIn
from tests.unit.test_bad_input import (  # noqa: F401 - fixtures
    KEY,
    LAUNCH,
    AwsCalls,
    Case,
    aws_calls,
    children,
    files_under,
    here,
)
from tests.unit.test_hub_apply import proxy  # noqa: F401 - fixture

SECRET = "s3cret-never-shown"
GENERIC = (
    "--authenticator",
    "generic-oauth",
    "--client-id",
    "hub",
    "--authorize-url",
    "https://sso.example.edu/authorize",
    "--token-url",
    "https://sso.example.edu/token",
    "--userdata-url",
    "https://sso.example.edu/userinfo",
)
SECRET_FILE = {"secret": f"{SECRET}\n".encode()}
REQUEST = {
    "server_config": {
        "CLUSTER_NAME": "alpha",
        "REGION": "us-east-1",
        "WORKER_AMI": "ami-12345678",
        "SUBNET_ID": "subnet-12345678",
        "WORKER_SECURITY_GROUPS": ["sg-1"],
        "KEY_NAME": "k",
    },
    "bind_ip": "10.0.1.5",
    "public_port": 443,
    "worker_command": ["/opt/cloudjhub/venv/bin/cloudjhub-worker"],
}


def request_with(**signin: Any) -> bytes:
    return json.dumps({**REQUEST, "signin": signin}).encode()


CASES = [
    Case(
        "secret-on-command-line",
        (*LAUNCH, *GENERIC, "--client-secret", SECRET),
        ("--client-secret", "process list", "--client-secret-file"),
        KEY,
        never=(SECRET,),
    ),
    Case(
        "secret-file-missing",
        (*LAUNCH, *GENERIC, "--client-secret-file", "nope"),
        ("--client-secret-file nope", "No such file"),
        KEY,
    ),
    Case(
        "secret-file-unreadable",  # a directory: unreadable as a file even for root
        (*LAUNCH, *GENERIC, "--client-secret-file", "."),
        ("--client-secret-file .", "cannot read"),
        KEY,
    ),
    Case(
        "secret-missing",
        (*LAUNCH, *GENERIC),
        ("generic-oauth needs", "--client-secret-file"),
        KEY,
    ),
    Case("unknown-authenticator", (*LAUNCH, "--authenticator", "saml"), ("'saml'", "lti13"), KEY),
    Case(
        "provider-url-not-https",
        (
            *LAUNCH,
            *GENERIC,
            "--client-secret-file",
            "secret",
            "--token-url",
            "http://sso.example.edu/t",
        ),
        ("--token-url", "http://sso.example.edu/t", "https"),
        {**KEY, **SECRET_FILE},
        never=(SECRET,),
    ),
    Case(
        "lti-issuer-not-https",
        (
            *LAUNCH,
            "--authenticator",
            "lti13",
            "--client-id",
            "c1",
            "--lti-issuer",
            "http://canvas.example.edu",
            "--lti-authorize-url",
            "https://canvas.example.edu/auth",
            "--lti-jwks-url",
            "https://canvas.example.edu/jwks",
        ),
        ("--lti-issuer", "https"),
        KEY,
    ),
    Case(
        "allow-list-bad-name",
        (*LAUNCH, *GENERIC, "--client-secret-file", "secret", "--allowed-users", "users.txt"),
        ("--allowed-users users.txt line 3", "'bad name/'"),
        {**KEY, **SECRET_FILE, "users.txt": b"alice\n# staff\nbad name/\n"},
        never=(SECRET,),
    ),
    Case(
        "admin-users-bad-name",
        (*LAUNCH, "--admin-users", "ok,../root"),
        ("--admin-users", "'../root'"),
        KEY,
    ),
    Case(
        "setup-secret-on-command-line",
        ("setup-manager", "--root", "root", "--no-start", "--client-secret", SECRET),
        ("--client-secret",),
        stdin=json.dumps(REQUEST).encode(),
        never=(SECRET,),
    ),
    Case(
        "setup-request-url-not-https",
        ("setup-manager", "--root", "root", "--no-start", "--authenticator", "generic-oauth"),
        ("authorize_url", "https"),
        stdin=request_with(
            authenticator="generic-oauth",
            client_id="hub",
            client_secret=SECRET,
            authorize_url="http://sso.example.edu/a",
            token_url="https://sso.example.edu/t",
            userdata_url="https://sso.example.edu/u",
        ),
        never=(SECRET,),
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_sign_in_is_one_line_exit_2_before_any_aws_call(
    case: Case,
    here: Path,  # noqa: F811
    aws_calls: AwsCalls,  # noqa: F811
) -> None:
    for name, content in case.files.items():
        (here / name).write_bytes(content)
        (here / name).chmod(0o600)
    files, processes = files_under(here), children()
    began = time.monotonic()
    result = CliRunner().invoke(main, list(case.argv), input=case.stdin, catch_exceptions=False)

    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needed in case.says:
        assert needed in lines[0], lines[0]
    for secret in case.never:
        assert secret not in result.output
    assert list(aws_calls) == []  # not even a read: nothing reached AWS
    assert files_under(here) == files
    assert children() <= processes
    assert time.monotonic() - began < 5


def oauth_signin(**extra: Any) -> SignIn:
    return SignIn(
        authenticator="generic-oauth",
        client_id="hub",
        client_secret=SECRET,
        authorize_url="https://sso.example.edu/authorize",
        token_url="https://sso.example.edu/token",
        userdata_url="https://sso.example.edu/userinfo",
        username_claim="sub",
        allowed_users=["alice", "bob"],
        admin_users=["prof"],
        ta_group="tas",
        public_url="https://hub.example.edu/",
        **extra,
    )


def test_setup_keeps_the_secret_0600_and_the_hub_config_uses_it(tmp_path: Path) -> None:
    request = SetupRequest.model_validate({**REQUEST, "signin": oauth_signin().model_dump()})
    reply = setup_manager(tmp_path, request, start=False, authenticator="generic-oauth")

    etc = tmp_path / "etc" / "cloudjhub"
    secret = etc / "oauth_client_secret"
    assert secret.read_text().strip() == SECRET
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (etc / "users_token").stat().st_mode & 0o777 == 0o600
    assert SECRET not in (etc / "hub.json").read_text()
    assert reply["callback_url"] == "https://hub.example.edu/hub/oauth_callback"
    assert SECRET not in json.dumps(reply)
    # The provider signs the admins in: no admin password for the launcher to keep.
    assert "admin_password" not in reply

    from cloudjhub.hub.settings import load_settings

    c = Config()
    apply(c, load_settings(etc / "hub.json"), {})
    generic, oauth = c.GenericOAuthenticator, c.OAuthenticator
    assert (oauth.client_id, oauth.client_secret) == ("hub", SECRET)
    assert oauth.oauth_callback_url == "https://hub.example.edu/hub/oauth_callback"
    assert generic.authorize_url == "https://sso.example.edu/authorize"
    assert generic.userdata_url == "https://sso.example.edu/userinfo"
    assert generic.username_claim == "sub"
    assert c.Authenticator.allowed_users == {"alice", "bob"}
    assert c.Authenticator.allow_all is False
    # The provider's "admin" is nobody's admin here: only --admin-users.
    assert c.Authenticator.admin_users == {"prof"}
    assert c.JupyterHub.cleanup_servers is False
    hub_class = c.JupyterHub.authenticator_class
    assert hub_class.__mro__[2].__name__ == "GenericOAuthenticator"
    assert c.StudentsMixin.ta_group == "tas"
    assert c.InstanceSpawner.staff_groups == ["admins", "tas"]  # they write /srv/shared
    assert set(c.JupyterHub.load_groups) == {"students", "tas", "admins"}
    (ta,) = [r for r in c.JupyterHub.load_roles if r["name"] == TA_ROLE]
    assert ta["groups"] == ["tas"] and ta["scopes"] == ta_scopes("students")
    assert "access:servers!group=students" in ta["scopes"]
    assert "admin:servers!group=students" in ta["scopes"]
    assert not any(s in ta["scopes"] for s in ("admin:users", "access:servers", "admin:servers"))
    (users,) = [s for s in c.JupyterHub.services if s["name"] == USERS_SERVICE]
    assert users["api_token"] == (etc / "users_token").read_text().strip()
    (users_role,) = [r for r in c.JupyterHub.load_roles if r["name"] == USERS_SERVICE]
    assert users_role["scopes"] == list(USERS_SCOPES)
    # `users add --admin`: the admins group holds the admin role, the service does not.
    (admin,) = [r for r in c.JupyterHub.load_roles if r["name"] == "admin"]
    assert admin == {"name": "admin", "groups": ["admins"]}


def test_a_rerun_with_another_sign_in_replaces_the_secret_and_the_authenticator(
    tmp_path: Path,
) -> None:
    first = SetupRequest.model_validate({**REQUEST, "signin": oauth_signin().model_dump()})
    setup_manager(tmp_path, first, start=False, authenticator="generic-oauth")
    native = SetupRequest.model_validate({**REQUEST, "signin": {"authenticator": "native"}})
    setup_manager(tmp_path, native, start=False)

    etc = tmp_path / "etc" / "cloudjhub"
    assert not (etc / "oauth_client_secret").exists()
    settings = json.loads((etc / "hub.json").read_text())
    assert settings["authenticator"]["kind"] == "native"
    assert settings["admin_users"] == ["admin"]


def test_lti13_settings_and_callback(tmp_path: Path) -> None:
    signin = SignIn(
        authenticator="lti13",
        client_id="c1",
        lti_issuer="https://canvas.example.edu",
        lti_authorize_url="https://canvas.example.edu/api/lti/authorize_redirect",
        lti_jwks_url="https://canvas.example.edu/api/lti/security/jwks",
    )
    request = SetupRequest.model_validate({**REQUEST, "signin": signin.model_dump()})
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "proxy_token").write_text("t\n")
    c = Config()
    apply(c, manager_settings(etc, tmp_path, request, 3600, None, "/usr/bin/python3", "lti13"), {})
    lti = c.LTI13Authenticator
    assert lti.client_id == {"c1"} and lti.issuer == "https://canvas.example.edu"
    assert lti.jwks_endpoint.endswith("/jwks") and lti.username_key == "email"
    assert c.JupyterHub.authenticator_class == "ltiauthenticator.lti13.auth.LTI13Authenticator"
    assert signin.callback_url("https://hub.example.edu/") == (
        "https://hub.example.edu/hub/lti13/oauth_callback"
    )


def test_a_loopback_provider_may_be_http_nothing_else_may() -> None:
    loop = "http://127.0.0.1:9400/oauth2/authorize"
    SignIn.model_validate({**oauth_signin().model_dump(), "authorize_url": loop})
    with pytest.raises(ValueError, match="https"):
        SignIn.model_validate({**oauth_signin().model_dump(), "authorize_url": "http://10.0.0.1/a"})


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("add", "bad/name"), "user name 'bad/name'"),
        (("add", "tina", "--ta"), "--ta: this hub has no TA group"),
        (("add", "tina", "--ta", "--student"), "a user is one of them"),
    ],
)
def test_users_refuses_bad_input_before_calling_the_hub(
    tmp_path: Path, argv: tuple[str, ...], says: str
) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    # Nobody listens there: a call would fail with "does not answer", not exit 2.
    hub = ("--hub-url", "http://127.0.0.1:9/hub/api", "--token-file", str(token))
    if "--student" in argv:
        hub += ("--ta-group", "tas")
    result = CliRunner().invoke(main, ["users", "alpha", *argv, *hub], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {result.output.strip()[7:]}"]
    assert says in result.output


@pytest.mark.parametrize(
    "argv",
    [("add", "tina", "--admin"), ("add", "tina", "--student"), ("remove", "tina", "--admin")],
)
def test_users_refuses_roles_when_the_provider_manages_groups(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """generic-oauth with --allowed-groups: JupyterHub's manage_groups resets every
    user's groups at each sign-in, so an admin or student group set here would not last."""
    signin = oauth_signin().model_dump()
    signin.update(ta_group=None, allowed_groups=["physics-101"])
    request = SetupRequest.model_validate({**REQUEST, "signin": signin})
    setup_manager(tmp_path, request, start=False, authenticator="generic-oauth")
    etc = tmp_path / "etc" / "cloudjhub"
    # Nobody listens there: a call would fail with "does not answer", not exit 2.
    hub = ("--settings", str(etc / "hub.json"), "--hub-url", "http://127.0.0.1:9/hub/api")
    result = CliRunner().invoke(main, ["users", "alpha", *argv, *hub], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert f"{argv[2]}: this hub's generic-oauth sign-in with --allowed-groups" in result.output
    plain = CliRunner().invoke(main, ["users", "alpha", "add", "tina", *hub])
    assert plain.exit_code == 1 and "does not answer" in plain.output, plain.output


def test_users_elsewhere_needs_the_hub_url_and_token(tmp_path: Path) -> None:
    missing = tmp_path / "hub.json"
    result = CliRunner().invoke(
        main,
        ["users", "alpha", "list"],
        env={"CLOUDJHUB_HUB_SETTINGS": str(missing)},
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    assert "--hub-url" in result.output and len(result.output.strip().splitlines()) == 1


def test_demo_refuses_a_bad_ta_group_before_starting_anything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(
        main, ["demo", "--state-dir", str(state), "--ta-group", "tas/x"], catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert "--ta-group 'tas/x'" in result.output and len(result.output.strip().splitlines()) == 1
    assert not state.exists()
