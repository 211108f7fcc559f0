"""The sign-in a launch asks for (`--authenticator` and its options), checked
whole before anything is created, and what the manager's setup makes of it.

It travels to the manager inside the setup request, over the SSH channel: the
client secret with it, never on a command line. The manager keeps the secret
in a file of mode 0600 and `hub.json` names that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..hub.signin_settings import (
    OAUTH_KINDS,
    Access,
    Lti13,
    OAuth,
    ProviderUrl,
    UserName,
    check_provider_url,
)

# How users sign in (`--authenticator`): those implemented, the default first.
Authenticator = Literal["native", "shared-password", "github", "google", "generic-oauth", "lti13"]
AUTHENTICATORS: tuple[str, ...] = get_args(Authenticator)


def authenticator_named(value: str) -> Authenticator:
    """`value` if it names an authenticator, else a ValueError saying which do."""
    for name in get_args(Authenticator):
        if value == name:
            return name
    raise ValueError(f"--authenticator {value!r}: unknown; use one of {', '.join(AUTHENTICATORS)}")


Claim = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
CLIENT_SECRET_FILE = "oauth_client_secret"  # noqa: S105 - a file name
USERS_TOKEN_FILE = "users_token"  # noqa: S105 - a file name
GENERIC_URLS = ("authorize_url", "token_url", "userdata_url")
LTI_SETTINGS = ("lti_issuer", "lti_authorize_url", "lti_jwks_url")


def option(field: str) -> str:
    return "--" + field.replace("_", "-")


def callback_path(authenticator: str) -> str:
    """Where the provider sends the browser back (JupyterHub's and ltiauthenticator's)."""
    return "hub/lti13/oauth_callback" if authenticator == "lti13" else "hub/oauth_callback"


class SignIn(BaseModel):
    """Every sign-in option of `launch` and `setup-manager`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    authenticator: Authenticator = "native"
    client_id: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    client_secret: str | None = Field(default=None, repr=False)
    authorize_url: ProviderUrl | None = None
    token_url: ProviderUrl | None = None
    userdata_url: ProviderUrl | None = None
    username_claim: Claim | None = None
    lti_issuer: ProviderUrl | None = None
    lti_authorize_url: ProviderUrl | None = None
    lti_jwks_url: ProviderUrl | None = None
    allowed_users: list[UserName] = Field(default_factory=list)
    allowed_groups: list[UserName] = Field(default_factory=list)
    admin_users: list[UserName] = Field(default_factory=list)
    ta_group: UserName | None = None
    # The hub's address as users' browsers reach it, for the callback URL.
    public_url: str | None = None

    @model_validator(mode="after")
    def _fits_authenticator(self) -> SignIn:
        kind = self.authenticator
        oauth, lti = kind in OAUTH_KINDS, kind == "lti13"
        needed: list[str] = []
        if oauth:
            needed += ["client_id", "client_secret"]
        if kind == "generic-oauth":
            needed += list(GENERIC_URLS)
        if lti:
            needed += ["client_id", *LTI_SETTINGS]
        missing = [option(f) for f in needed if getattr(self, f) is None]
        if "--client-secret" in missing:
            missing[missing.index("--client-secret")] = (
                "--client-secret-file (or $CLOUDJHUB_CLIENT_SECRET)"
            )
        if missing:
            raise ValueError(f"--authenticator {kind} needs {', '.join(missing)}")
        allowed = set(needed) | {"username_claim"} if oauth or lti else set()
        if kind == "google":
            allowed.discard("username_claim")
        for name in ("client_id", "client_secret", "username_claim", *GENERIC_URLS, *LTI_SETTINGS):
            if getattr(self, name) is not None and name not in allowed:
                raise ValueError(f"{option(name)} is not an option of --authenticator {kind}")
        if self.allowed_groups and kind not in ("github", "generic-oauth"):
            raise ValueError(
                f"--allowed-groups: only with github (organizations) or generic-oauth, not {kind}"
            )
        if self.allowed_groups and self.ta_group and kind == "generic-oauth":
            raise ValueError(
                "--allowed-groups and --ta-group: with --allowed-groups the provider decides "
                "every group at each sign-in; use --allowed-users with --ta-group"
            )
        if self.public_url is not None:
            check_provider_url(self.public_url, "--public-url")
        return self

    @property
    def external(self) -> bool:
        """Signs in with accounts kept elsewhere (no `admin` password of ours)."""
        return self.authenticator in (*OAUTH_KINDS, "lti13")

    def callback_url(self, hub_url: str) -> str:
        return (self.public_url or hub_url).rstrip("/") + "/" + callback_path(self.authenticator)

    def admins(self) -> list[str]:
        """Our own `admin` only where we hand out its password."""
        return list(
            dict.fromkeys(self.admin_users if self.external else ["admin", *self.admin_users])
        )

    def hub_authenticator(self, etc: Path, hub_url: str) -> OAuth | Lti13 | None:
        """What `hub.json` holds for an external sign-in; None for ours."""
        if self.authenticator == "lti13":
            assert (
                self.client_id and self.lti_issuer and self.lti_authorize_url and self.lti_jwks_url
            )
            return Lti13.model_validate(
                {
                    "client_id": self.client_id,
                    "issuer": self.lti_issuer,
                    "authorize_url": self.lti_authorize_url,
                    "jwks_url": self.lti_jwks_url,
                    **self._claim(),
                }
            )
        if self.authenticator in OAUTH_KINDS:
            assert self.client_id
            return OAuth.model_validate(
                {
                    "kind": self.authenticator,
                    "client_id": self.client_id,
                    "client_secret_file": str(etc / CLIENT_SECRET_FILE),
                    "callback_url": self.callback_url(hub_url),
                    "authorize_url": self.authorize_url,
                    "token_url": self.token_url,
                    "userdata_url": self.userdata_url,
                    "allowed_groups": list(self.allowed_groups),
                    **self._claim(),
                }
            )
        return None

    def _claim(self) -> dict[str, str]:
        return {"username_claim": self.username_claim} if self.username_claim else {}

    def access(self, etc: Path) -> Access:
        return Access(
            allowed_users=list(self.allowed_users),
            ta_group=self.ta_group,
            users_token_file=str(etc / USERS_TOKEN_FILE),
        )
