"""Sign-in onto a JupyterHub config: the authenticator of `hub.json` (the
ecosystem's: oauthenticator, jupyterhub-ltiauthenticator, NativeAuthenticator,
JupyterHub's shared password), the allow list, the teaching assistants' role
and the service `cloudjhub users` speaks for.

Teaching assistants are the members of `ta_group`; their role reaches only
users of the `students` group, which every user who is neither admin nor TA
joins when the hub first sees them (`StudentsMixin.add_user`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.utils import maybe_future
from sqlalchemy.orm import object_session
from traitlets import Unicode
from traitlets.config import Config, LoggingConfigurable
from traitlets.utils.importstring import import_item

from .settings import HubSettings
from .signin_settings import ADMINS_GROUP, STUDENTS_GROUP, Lti13, OAuth, manages_groups

NATIVE_CLASS = "cloudjhub.hub.native.SeededNativeAuthenticator"
AUTHENTICATOR_CLASSES = {
    "github": "oauthenticator.github.GitHubOAuthenticator",
    "google": "oauthenticator.google.GoogleOAuthenticator",
    "generic-oauth": "oauthenticator.generic.GenericOAuthenticator",
    "lti13": "ltiauthenticator.lti13.auth.LTI13Authenticator",
    "native": NATIVE_CLASS,
    "shared-password": "jupyterhub.authenticators.shared.SharedPasswordAuthenticator",
    "dummy": "jupyterhub.auth.DummyAuthenticator",
}
TA_ROLE = "teaching-assistant"
USERS_SERVICE = "cloudjhub-users"
# `cloudjhub users`: make and delete users (the allow list: admin:users), add and
# remove group members (groups), see servers' state (read:servers). Not an admin: it
# makes admins by putting them in ADMINS_GROUP, which holds the admin role.
USERS_SCOPES = ("admin:users", "groups", "read:servers")


def ta_scopes(students: str = STUDENTS_GROUP) -> list[str]:
    """List students, see their servers and activity, start, stop and open them."""
    only = f"!group={students}"
    return [
        "admin-ui",
        f"list:users{only}",
        f"read:users:name{only}",
        f"read:users:activity{only}",
        f"admin:servers{only}",
        f"access:servers{only}",
    ]


class StudentsMixin(LoggingConfigurable):
    """Puts each user the hub adds (at first sign-in, through the API, at start)
    into the students' group, unless they are an admin or a teaching assistant."""

    ta_group = Unicode("", help="The teaching assistants' group; never students.").tag(config=True)

    async def add_user(self, user: Any) -> None:
        await maybe_future(super().add_user(user))  # type: ignore[misc]
        # The hub passes its User wrapper, or at start the database row itself.
        row = getattr(user, "orm_user", user)
        admins: set[str] = getattr(self, "admin_users", set())
        groups = {g.name for g in row.groups}
        if row.admin or row.name in admins or groups & {self.ta_group, ADMINS_GROUP}:
            return
        if STUDENTS_GROUP not in groups:
            db = object_session(row)
            assert db is not None
            group = orm.Group.find(db, STUDENTS_GROUP)
            if group is None:
                group = orm.Group(name=STUDENTS_GROUP)
                db.add(group)
            row.groups.append(group)
            db.commit()


def with_students(base: type) -> type:
    return type(f"Cloudjhub{base.__name__}", (StudentsMixin, base), {})


def _secret(path: str) -> str:
    return Path(path).read_text().strip()


def apply_signin(c: Config, settings: HubSettings) -> None:
    """Authenticator, allow list and TA role; `c.JupyterHub.services` and
    `load_roles` must already hold the other services'."""
    auth, access, hub = settings.authenticator, settings.access, c.JupyterHub
    if access.ta_group:
        hub.authenticator_class = with_students(import_item(AUTHENTICATOR_CLASSES[auth.kind]))
    elif isinstance(auth, Lti13):
        hub.authenticator_class = AUTHENTICATOR_CLASSES[auth.kind]
    groups: list[str] = []
    if isinstance(auth, OAuth):
        oauth = c.OAuthenticator
        oauth.client_id = auth.client_id
        oauth.client_secret = _secret(auth.client_secret_file)
        oauth.oauth_callback_url = auth.callback_url
        if auth.kind == "generic-oauth":
            generic = c.GenericOAuthenticator
            generic.authorize_url = auth.authorize_url
            generic.token_url = auth.token_url
            generic.userdata_url = auth.userdata_url
            generic.username_claim = auth.username_claim
            generic.scope = list(auth.scopes)
            if manages_groups(auth):
                generic.manage_groups = True
                generic.auth_state_groups_key = f"oauth_user.{auth.groups_claim}"
                generic.allowed_groups = set(auth.allowed_groups)
        elif auth.kind == "github" and auth.allowed_groups:
            c.GitHubOAuthenticator.allowed_organizations = set(auth.allowed_groups)
            c.GitHubOAuthenticator.scope = ["read:org"]
        groups = list(auth.allowed_groups)
    elif isinstance(auth, Lti13):
        lti = c.LTI13Authenticator
        lti.client_id = {auth.client_id}
        lti.issuer = auth.issuer
        lti.authorize_url = auth.authorize_url
        lti.jwks_endpoint = auth.jwks_url
        lti.username_key = auth.username_claim
    if access.allowed_users or groups:
        c.Authenticator.allowed_users = set(access.allowed_users)
        c.Authenticator.allow_all = False
        # Users `cloudjhub users add` makes through the API may sign in too.
        c.Authenticator.allow_existing_users = True
    else:
        # Whoever the authenticator lets in (native: approved accounts; OAuth:
        # every account of the provider).
        c.Authenticator.allow_all = True

    roles: list[dict[str, Any]] = list(hub.load_roles)
    services: list[dict[str, Any]] = list(hub.services)
    if access.ta_group:
        c.StudentsMixin.ta_group = access.ta_group
        c.InstanceSpawner.staff_groups = [ADMINS_GROUP, access.ta_group]  # /srv/shared
        hub.load_groups = {STUDENTS_GROUP: {"users": []}, access.ta_group: {"users": []}}
        roles.append({"name": TA_ROLE, "groups": [access.ta_group], "scopes": ta_scopes()})
    if access.users_token_file and Path(access.users_token_file).exists():
        services.append({"name": USERS_SERVICE, "api_token": _secret(access.users_token_file)})
        roles.append(
            {"name": USERS_SERVICE, "services": [USERS_SERVICE], "scopes": list(USERS_SCOPES)}
        )
        # Admins `cloudjhub users` makes: members of a group holding the admin role
        # (JupyterHub lets only an admin set a user's admin flag; the service is not one).
        groups_now = dict(hub.load_groups) if "load_groups" in hub else {}
        hub.load_groups = {**groups_now, ADMINS_GROUP: {"users": []}}
        admin = next((r for r in roles if r["name"] == "admin"), None)
        if admin is None:
            roles.append({"name": "admin", "groups": [ADMINS_GROUP]})
        else:
            admin["groups"] = [*admin.get("groups", []), ADMINS_GROUP]
    hub.load_roles, hub.services = roles, services
