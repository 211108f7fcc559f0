"""The manager's default authenticator in process, on a real JupyterHub database:
the admin's account exists before anyone can sign up under its name, sign-ups wait
for approval, and a restart keeps a password the admin has changed since."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jupyterhub import orm

from cloudjhub.hub.native import LoginHandler, SeededNativeAuthenticator

ADMIN_PASSWORD = "generated-by-setup-manager-0123456789"


@pytest.fixture
def db() -> Any:
    return orm.new_session_factory("sqlite://")()


def authenticator(db: Any, tmp_path: Path) -> SeededNativeAuthenticator:
    secret = tmp_path / "admin_password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    return SeededNativeAuthenticator(
        admin_password_file=str(secret), admin_users={"admin"}, _deprecated_db_session=db
    )


async def test_admin_exists_from_the_start_and_cannot_be_claimed(db: Any, tmp_path: Path) -> None:
    auth = authenticator(db, tmp_path)
    assert await auth.authenticate(None, {"username": "admin", "password": ADMIN_PASSWORD}) == (
        "admin"
    )
    assert auth.create_user("admin", "stranger-0wns-admin") is None
    assert auth.create_user("Admin", "stranger-0wns-admin") is None  # same name, normalized
    guess = {"username": "admin", "password": "stranger-0wns-admin"}
    assert await auth.authenticate(None, guess) is None


async def test_a_sign_up_waits_for_approval(db: Any, tmp_path: Path) -> None:
    auth = authenticator(db, tmp_path)
    assert auth.create_user("grace", "grace-has-her-own") is not None
    assert await auth.authenticate(
        None, {"username": "grace", "password": "grace-has-her-own"}
    ) is (None)
    auth.get_user("grace").is_authorized = True
    assert await auth.authenticate(
        None, {"username": "grace", "password": "grace-has-her-own"}
    ) == ("grace")
    for wrong in (ADMIN_PASSWORD, "anything-else"):
        assert await auth.authenticate(None, {"username": "grace", "password": wrong}) is None


def test_a_restart_keeps_a_changed_admin_password(db: Any, tmp_path: Path) -> None:
    assert authenticator(db, tmp_path).change_password("admin", "changed-by-the-admin")
    again = authenticator(db, tmp_path)
    assert again.get_user("admin").is_valid_password("changed-by-the-admin")
    assert not again.get_user("admin").is_valid_password(ADMIN_PASSWORD)


def test_without_the_password_file_it_refuses_to_start(db: Any) -> None:
    with pytest.raises(ValueError, match="admin_password_file"):
        SeededNativeAuthenticator(admin_users={"admin"}, _deprecated_db_session=db)


def test_login_page_is_served_by_the_jupyterhub_6_compatible_handler(
    db: Any, tmp_path: Path
) -> None:
    handlers = dict(authenticator(db, tmp_path).get_handlers(None))
    assert handlers["/login"] is LoginHandler
    assert "/signup" in handlers and "/authorize/([^/]*)" in handlers
