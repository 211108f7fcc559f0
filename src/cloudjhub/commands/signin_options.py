"""The sign-in options `launch` and `setup-manager` share, and the one place that
turns them into a checked `SignIn`: files read, the secret taken from a file or
the environment (never from the command line), every name and URL checked,
before any AWS call or SSH.
"""

from __future__ import annotations

import os
from typing import Any

import click
from pydantic import ValidationError

from .errors import BadInput
from .options import env_option

SECRET_ENV = "CLOUDJHUB_CLIENT_SECRET"  # noqa: S105 - a variable's name
MAX_LIST_BYTES = 1_000_000
# (option, help); each also from CLOUDJHUB_<OPTION>.
VALUE_OPTIONS = [
    ("--client-id", "OAuth / LTI 1.3 client id the provider gave the hub."),
    (
        "--client-secret-file",
        f"File holding the OAuth client secret (or set ${SECRET_ENV}); sent to the "
        "manager over SSH only and kept there mode 0600.",
    ),
    ("--authorize-url", "generic-oauth: the provider's authorization endpoint (https)."),
    ("--token-url", "generic-oauth: the provider's token endpoint (https)."),
    ("--userdata-url", "generic-oauth: the provider's userinfo endpoint (https)."),
    (
        "--username-claim",
        "Claim that is the user name (generic-oauth: preferred_username; lti13: email).",
    ),
    ("--lti-issuer", "lti13: the platform's issuer (https)."),
    ("--lti-authorize-url", "lti13: the platform's OIDC authorization endpoint (https)."),
    ("--lti-jwks-url", "lti13: the platform's JWKS endpoint (https)."),
    ("--allowed-users", "File of user names allowed to sign in, one a line (# comments)."),
    (
        "--ta-group",
        "Group of teaching assistants: they see, start, stop and open students' servers.",
    ),
    (
        "--public-url",
        "The hub's address as browsers reach it (default: the manager's), for the callback URL.",
    ),
]
LIST_OPTIONS = [
    ("--allowed-groups", "Provider groups allowed in (github: organizations); repeatable or a,b."),
    ("--admin-users", "Hub admins (user names of the provider); repeatable or a,b."),
]
NAMES = [o[2:].replace("-", "_") for o, _ in VALUE_OPTIONS + LIST_OPTIONS]


def _refuse_secret(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise BadInput(
            "--client-secret: a secret on the command line shows in the process list and "
            f"shell history; use --client-secret-file FILE or ${SECRET_ENV}"
        )


def signin_options(fn: Any) -> Any:
    for decl, text in reversed(LIST_OPTIONS):
        fn = env_option(decl, multiple=True, help=text)(fn)
    for decl, text in reversed(VALUE_OPTIONS):
        fn = env_option(decl, default=None, help=text)(fn)
    return click.option(
        "--client-secret",
        hidden=True,
        expose_value=False,
        callback=_refuse_secret,
        is_eager=True,
    )(fn)


def _read(path: str, option: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"{option} {path}: cannot read it ({exc.strerror})") from exc
    if len(data) > MAX_LIST_BYTES:
        raise BadInput(f"{option} {path}: larger than {MAX_LIST_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise BadInput(f"{option} {path}: not UTF-8 text") from exc


def _allowed_users(path: str) -> list[str]:
    from ..hub.signin_settings import check_name

    names = []
    for number, line in enumerate(_read(path, "--allowed-users").splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if name:
            try:
                names.append(check_name(name))
            except ValueError as exc:
                raise BadInput(f"--allowed-users {path} line {number}: {exc}") from None
    return names


def _secret() -> str | None:
    return os.environ.get(SECRET_ENV) or None


def signin_from(authenticator: str, kw: dict[str, Any]) -> Any:
    """The SignIn the options in `kw` ask for (they are popped); BadInput if wrong."""
    from ..launch.signin import SignIn

    given = {name: kw.pop(name, None) for name in NAMES}
    secret_file = given.pop("client_secret_file")
    secret = _secret()
    if secret_file is not None:
        secret = _read(secret_file, "--client-secret-file").strip()
        if not secret:
            raise BadInput(f"--client-secret-file {secret_file}: empty")
    users_file = given.pop("allowed_users")
    lists = {
        name: [v.strip() for value in given.pop(name) or () for v in value.split(",") if v.strip()]
        for name in ("allowed_groups", "admin_users")
    }
    values = {k: v for k, v in given.items() if v is not None}
    if secret is not None and authenticator not in ("github", "google", "generic-oauth"):
        if secret_file is not None:
            raise BadInput(
                f"--client-secret-file is not an option of --authenticator {authenticator}"
            )
        secret = None  # the variable is for the OAuth kinds; others ignore it
    try:
        return SignIn.model_validate(
            {
                "authenticator": authenticator,
                "client_secret": secret,
                "allowed_users": _allowed_users(users_file) if users_file is not None else [],
                **lists,
                **values,
            }
        )
    except ValidationError as exc:
        raise BadInput(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    """One line naming the option (never echoing a secret)."""
    error = exc.errors()[0]
    why = str(error["msg"]).removeprefix("Value error, ")
    loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
    return f"--{loc[0].replace('_', '-')}: {why}" if loc else why
