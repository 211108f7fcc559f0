"""How users sign in with the school's accounts, as `hub.json` holds it: OAuth
(GitHub, Google, any OpenID Connect provider) and LTI 1.3, plus who may sign in,
who is admin and which group is the teaching assistants'.

Like the rest of `hub.json` it names where the client secret is kept (a 0600
file) and never holds the secret itself.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

OAUTH_KINDS = ("github", "google", "generic-oauth")
STUDENTS_GROUP = "students"
# Members hold JupyterHub's admin role; `cloudjhub users add --admin` fills it.
ADMINS_GROUP = "admins"
# What JupyterHub accepts as a user or group name and what the worker can make an
# account of: no slash, no whitespace, no control characters, not too long.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


def check_name(value: str, what: str = "user name") -> str:
    """`value` if it is a usable user or group name, else a ValueError naming it."""
    if not NAME_PATTERN.fullmatch(value):
        shown = value if len(value) <= 80 and value.isprintable() else repr(value[:80])
        raise ValueError(
            f"{what} {shown!r}: use 1-64 letters, digits and . _ @ + - (starting with a "
            "letter or digit)"
        )
    return value


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_provider_url(value: str, what: str = "provider URL") -> str:
    """An https URL, or http on loopback only (a provider for tests); else a ValueError."""
    parts = urlsplit(value)
    host = parts.hostname or ""
    if not host or parts.username or parts.password or parts.fragment:
        raise ValueError(f"{what} {value!r}: not a URL with a host (and no user or fragment)")
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host)):
        return value
    raise ValueError(f"{what} {value!r}: must be https (http only on loopback)")


UserName = Annotated[str, AfterValidator(check_name)]
ProviderUrl = Annotated[str, AfterValidator(check_provider_url)]
Path0600 = Annotated[str, Field(pattern=r"^/")]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OAuth(_Settings):
    """oauthenticator's GitHub, Google or Generic (OpenID Connect) login."""

    kind: Literal["github", "google", "generic-oauth"]
    client_id: Annotated[str, Field(min_length=1, max_length=512)]
    client_secret_file: Path0600
    callback_url: str
    # generic-oauth only: the provider's endpoints and which claim is the user name.
    authorize_url: ProviderUrl | None = None
    token_url: ProviderUrl | None = None
    userdata_url: ProviderUrl | None = None
    username_claim: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "preferred_username"
    scopes: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")]] = Field(
        default_factory=lambda: ["openid", "profile", "email"]
    )
    # Provider groups allowed in (generic-oauth: the `groups_claim` of the user info).
    allowed_groups: list[UserName] = Field(default_factory=list)
    groups_claim: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "groups"


def manages_groups(auth: object) -> bool:
    """generic-oauth with allowed groups: the provider sets every user's groups at each
    sign-in (JupyterHub's manage_groups), so no one else may change them."""
    return isinstance(auth, OAuth) and auth.kind == "generic-oauth" and bool(auth.allowed_groups)


class Lti13(_Settings):
    """jupyterhub-ltiauthenticator's LTI 1.3 launch from a course in an LMS."""

    kind: Literal["lti13"] = "lti13"
    client_id: Annotated[str, Field(min_length=1, max_length=512)]
    issuer: ProviderUrl
    authorize_url: ProviderUrl
    jwks_url: ProviderUrl
    username_claim: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "email"


class Access(_Settings):
    """Who may sign in (the allow list; empty: whoever the authenticator lets in) and
    the teaching assistants' group (None: no TA role)."""

    allowed_users: list[UserName] = Field(default_factory=list)
    ta_group: UserName | None = None
    # The token of `cloudjhub users`' service, in a file of mode 0600.
    users_token_file: Path0600 | None = None
