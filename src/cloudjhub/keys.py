"""SSH key pairs made on the machine that keeps the private half."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ensure_ed25519(path: Path, comment: str) -> str:
    """Make `path` (mode 0600) and `path.pub` once; return the public key line."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
        )
    path.chmod(0o600)
    return path.with_suffix(".pub").read_text().strip()
