"""Where the agent keeps homes, logs and server records under an instance root.

On an instance the root is ``/``; the local emulator points it at a directory (the
instance root), which is also what tells the agent it is emulated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The PATH of everything the agent starts, before the server's own bin dir.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Layout:
    """Where the agent keeps homes, logs and records under an instance root."""

    root: Path
    volumes_dir: Path
    # The local cloud's EFS: a directory per file system id (emulated only).
    shared_dir: Path = Path("/nonexistent")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Layout:
        """Read the root from the environment so the emulator can point it at a directory."""
        env = os.environ if environ is None else environ
        root = Path(os.path.abspath(env.get("CLOUDJHUB_WORKER_ROOT") or "/"))
        volumes = env.get("CLOUDJHUB_VOLUMES_DIR") or str(root.parent / "volumes")
        shared = env.get("CLOUDJHUB_SHARED_DIR") or os.path.join(os.path.dirname(volumes), "efs")
        return cls(
            root=root,
            volumes_dir=Path(os.path.abspath(volumes)),
            shared_dir=Path(os.path.abspath(shared)),
        )

    @property
    def emulated(self) -> bool:
        """Any root other than / means a local emulated instance: no accounts, no mounts."""
        return self.root != Path("/")

    @property
    def run_dir(self) -> Path:
        return self.root / "run" / "cloudjhub"

    @property
    def log_dir(self) -> Path:
        return self.root / "var" / "log" / "cloudjhub"

    def record_file(self, user: str) -> Path:
        return self.run_dir / f"{user}.json"

    def watch_log_file(self, user: str) -> Path:
        return self.log_dir / f"{user}.watch.log"

    @property
    def shutdown_request(self) -> Path:
        """Emulated machines cannot run `shutdown`; the emulator acts on this file."""
        return self.root / "run" / "shutdown"

    @property
    def accounts_dir(self) -> Path:
        """Records of the accounts the agent made; it hands out no others."""
        return self.root / "var" / "lib" / "cloudjhub" / "accounts"

    @property
    def releases_dir(self) -> Path:
        """Releases the hub staged here (root-only): <name>.tar.gz and <name>.sha256."""
        return self.root / "var" / "lib" / "cloudjhub" / "releases"

    def delivered_file(self, user: str) -> Path:
        """Which releases (name to digest) are already in the user's home."""
        return self.root / "var" / "lib" / "cloudjhub" / "delivered" / f"{user}.json"

    @property
    def shared_mount(self) -> Path:
        """Where the shared course folder is mounted: /srv/shared."""
        return self.root / "srv" / "shared"

    @property
    def shared_staging(self) -> Path:
        """Where the EFS file system itself is mounted on an instance (root-only parent)."""
        return self.root / "var" / "lib" / "cloudjhub" / "efs" / "root"

    @property
    def shared_view(self) -> Path:
        """Where a start builds its view of the shared folder (binds, the dropbox mask)
        before moving it to /srv/shared whole; its parent is root-only."""
        return self.root / "var" / "lib" / "cloudjhub" / "shared-view" / "tree"

    def log_file(self, user: str) -> Path:
        return self.log_dir / f"{user}.log"

    def emulated_home(self, user: str) -> Path:
        return self.root / "home" / user


def write_private(path: Path, text: str) -> None:
    """Atomically write a file only its owner (root on instances) can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
