"""cloudjhub's own setup of a manager, run ON the manager by `cloudjhub setup-manager`.

It writes configs, keys and the hub's unit under a root prefix and starts the
hub, and nothing else: OS packages are the install script's job. Secrets
(cookie secret, proxy token, passwords, the workers' SSH key) are generated
here and never leave the machine; only the workers' public key is returned.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config import server_config_from, write_server_config
from ..keys import ensure_ed25519
from .hubconfig import ManagerHub, find_proxy, render_manager_config
from .units import HUB_UNIT, Unit, install_unit, run_unit_directly

WORKER_KEY = "worker_key"
SECRET_FILES = {
    "cookie_secret": lambda: secrets.token_hex(32),
    "proxy_token": lambda: secrets.token_hex(32),
    "user_password": lambda: secrets.token_urlsafe(12),
    "admin_password": lambda: secrets.token_urlsafe(32),
}


class TlsFiles(BaseModel):
    """The admin's certificate and key, sent over the SSH channel."""

    model_config = ConfigDict(extra="forbid")

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


class SetupRequest(BaseModel):
    """What the launcher sends on stdin."""

    model_config = ConfigDict(extra="forbid")

    server_config: dict[str, Any]
    bind_ip: IPv4Address  # goes into generated config: an address and nothing else
    public_port: int = Field(80, ge=1, le=65535)
    worker_command: list[str] = Field(min_length=1)
    tls: TlsFiles | None = None


def _private_file(path: Path, make: Any) -> None:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
    path.chmod(0o600)


def _worker_key(etc: Path) -> str:
    return ensure_ed25519(etc / WORKER_KEY, "cloudjhub-manager")


def _stop_running_hub(state: Path) -> None:
    """Emulated restart: end the hub this unit started before (checked by cmdline)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((state / "jupyterhub.pid").read_text().strip())
        if b"jupyterhub" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)


def setup_manager(root: Path, request: SetupRequest, start: bool = True) -> dict[str, str]:
    etc = root / "etc" / "cloudjhub"
    state = root / "var" / "lib" / "cloudjhub"
    etc.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_key = _worker_key(etc)
    for name, make in SECRET_FILES.items():
        _private_file(etc / name, make)
    config = server_config_from(
        {**request.server_config, "SSH_KEY_FILE": str(etc / WORKER_KEY)}, "setup request"
    )
    write_server_config(config, etc / "server_config.json")
    tls = None
    if request.tls is not None:
        ssl_dir = etc / "ssl"
        ssl_dir.mkdir(mode=0o700, exist_ok=True)
        for name, text in (("hub.crt", request.tls.cert), ("hub.key", request.tls.key)):
            path = ssl_dir / name
            path.unlink(missing_ok=True)
            _private_file(path, lambda text=text: text.strip())
        tls = (ssl_dir / "hub.crt", ssl_dir / "hub.key")
    python = sys.executable
    hub = ManagerHub(
        etc=etc,
        state=state,
        bind_ip=str(request.bind_ip),
        public_port=request.public_port,
        python=python,
        proxy=find_proxy(),
        worker_command=tuple(request.worker_command),
        idle_timeout=config.JUPYTER_NOTEBOOK_TIMEOUT,
        tls=tls,
    )
    (etc / "jupyterhub_config.py").write_text(render_manager_config(hub))
    unit = Unit(
        description=f"cloudjhub JupyterHub for cluster {config.CLUSTER_NAME}",
        exec_start=[python, "-m", "jupyterhub", "-f", str(etc / "jupyterhub_config.py")],
        working_directory=str(state),
        environment={
            "CLOUDJHUB_SERVER_CONFIG": str(etc / "server_config.json"),
            "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        },
    )
    path = install_unit(root, HUB_UNIT, unit)
    if start:
        if root == Path("/"):
            for args in (["daemon-reload"], ["enable", HUB_UNIT], ["restart", HUB_UNIT]):
                subprocess.run(["systemctl", *args], check=True)
        else:
            _stop_running_hub(state)
            run_unit_directly(path, root / "var" / "log" / "cloudjhub-hub.log")
    return {"worker_public_key": public_key, "hub_config": str(etc / "jupyterhub_config.py")}


def main_json(root: Path, raw: str, start: bool) -> str:
    request = SetupRequest.model_validate(json.loads(raw))
    return json.dumps(setup_manager(root, request, start))
