"""NativeAuthenticator whose admin accounts nobody can claim.

NativeAuthenticator approves a sign-up at once when its name is in
`admin_users`, so whoever signs up as `admin` first would become the hub's
admin. Here the hub makes each admin's account itself when it starts, with the
password the manager's setup generated, and sign-up refuses admin names.

Its login form's handler (1.3) uses `statsd`, which JupyterHub 6 removed, so
every sign-in would fail; the form is kept and JupyterHub's own login checks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bcrypt
from jupyterhub.handlers.login import LoginHandler as HubLoginHandler
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import LoginHandler as NativeLoginHandler
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode


class LoginHandler(NativeLoginHandler):
    """NativeAuthenticator's login page (with its sign-up link), JupyterHub's login."""

    def _render(self, login_error: str | None = None, username: str | None = None, **_: Any) -> Any:
        # JupyterHub renders a failed form post through _render with more arguments.
        return super()._render(login_error=login_error, username=username)

    async def post(self) -> None:
        await HubLoginHandler.post(self)


class SeededNativeAuthenticator(NativeAuthenticator):
    admin_password_file = Unicode(
        "",
        help="File with the password of the admin accounts the hub creates at start "
        "(only those that do not exist yet; a password changed since is kept).",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._seed_admins()

    def _seed_admins(self) -> None:
        if not self.admin_password_file:
            raise ValueError("SeededNativeAuthenticator.admin_password_file is not set")
        password = Path(self.admin_password_file).read_text().strip().encode()
        for name in sorted(self.admin_users):
            if self.get_user(name) is None:
                hashed = bcrypt.hashpw(password, bcrypt.gensalt())
                self.db.add(UserInfo(username=name, password=hashed, is_authorized=True))
        self.db.commit()

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        handlers: list[tuple[str, Any]] = super().get_handlers(app)
        return [(path, LoginHandler if path == "/login" else h) for path, h in handlers]

    def create_user(self, username: str, password: str, **kwargs: Any) -> Any:
        """Sign-up: never under an admin's name (its account is the hub's to make)."""
        if self.normalize_username(username) in self.admin_users:
            return None
        return super().create_user(username, password, **kwargs)
