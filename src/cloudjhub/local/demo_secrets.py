"""The demo's secrets, in files only their owner may read (mode 0600): the sign-in
passwords, new at every start, and the embedded EC2 endpoint's credentials."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ADMIN_PASSWORD_FILE = "admin_password"  # noqa: S105 - a file name
USER_PASSWORD_FILE = "user_password"  # noqa: S105 - a file name
# In the AWS CLI's format, for AWS_SHARED_CREDENTIALS_FILE.
CREDENTIALS_FILE = "aws-credentials"


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path`, mode 0600 from the start, replacing any older file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
    return path


def make_passwords(state_dir: Path) -> tuple[str, str]:
    """(admin password, user password), kept for the hub to read; JupyterHub wants
    the admin's at least 32 characters and different from the user's."""
    admin, user = secrets.token_urlsafe(32), secrets.token_urlsafe(12)
    write_private(state_dir / ADMIN_PASSWORD_FILE, admin + "\n")
    write_private(state_dir / USER_PASSWORD_FILE, user + "\n")
    return admin, user


def write_credentials(state_dir: Path, credentials: dict[str, str]) -> Path:
    return write_private(
        state_dir / CREDENTIALS_FILE,
        "[default]\n"
        f"aws_access_key_id = {credentials['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {credentials['AWS_SECRET_ACCESS_KEY']}\n",
    )
