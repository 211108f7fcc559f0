"""systemd units for the manager, and running one without systemd.

On AWS, systemd runs the unit as an unprivileged service user in a sandbox
(`SANDBOX`). In the local cloud there is no systemd inside an emulated
instance, so the same unit file is run directly: its ExecStart, Environment
and WorkingDirectory, detached, as the current user and without the sandbox.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HUB_UNIT = "cloudjhub-hub.service"
# The hub's sandbox. It also holds configurable-http-proxy, which the hub starts
# as its child: JupyterHub keeps the proxy's routes and restarts it, and a
# separate unit would need the proxy token in a second place. Not set, because
# they would break the hub: MemoryDenyWriteExecute (node's JIT needs W+X pages),
# PrivateNetwork and IPAddressDeny (it serves users and reaches workers),
# PrivateUsers (the port capability must hold in the host's namespace),
# ProcSubset=pid (node reads /proc/cpuinfo and /proc/stat).
SANDBOX = (
    ("UMask", "0077"),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("PrivateMounts", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("RemoveIPC", "yes"),
    # AF_NETLINK: getifaddrs and glibc's getaddrinfo read interfaces through it.
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallFilter", "~@privileged"),
    ("SystemCallErrorNumber", "EPERM"),
)
# systemd expands % specifiers and $ variables, and " and newlines end a value.
_SYSTEMD_SPECIAL = re.compile(r'[%$"\\\n]')


@dataclass(frozen=True)
class Unit:
    description: str
    exec_start: list[str]
    working_directory: str
    environment: dict[str, str]
    # Who the service runs as (None: root), and, sandboxed, what it may write.
    user: str | None = None
    writable_paths: tuple[str, ...] = ()
    # Kept (ambient) and the only ones it can ever have (bounding set).
    capabilities: tuple[str, ...] = ()

    def render(self) -> str:
        values = (*self.exec_start, self.working_directory, *self.environment.values())
        for value in (*values, *self.writable_paths, self.user or ""):
            if _SYSTEMD_SPECIAL.search(value):
                raise ValueError(
                    f"refusing to write {value!r} into a unit: systemd would expand it"
                )
        for path in self.writable_paths:
            if " " in path:  # ReadWritePaths= is a space-separated list
                raise ValueError(f"refusing to write {path!r} into a unit: it has a space")
        env = "\n".join(f'Environment="{k}={v}"' for k, v in self.environment.items())
        return (
            "[Unit]\n"
            f"Description={self.description}\n"
            "After=network-online.target\nWants=network-online.target\n\n"
            "[Service]\n"
            f"{self._identity()}"
            f"WorkingDirectory={self.working_directory}\n"
            f"{env}\n"
            f"ExecStart={shlex.join(self.exec_start)}\n"
            "Restart=always\nRestartSec=5\n"
            f"{self._sandbox()}\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )

    def _identity(self) -> str:
        return f"User={self.user}\nGroup={self.user}\n" if self.user else ""

    def _sandbox(self) -> str:
        if self.user is None:
            return ""
        caps = " ".join(self.capabilities)
        lines = [
            f"AmbientCapabilities={caps}",
            f"CapabilityBoundingSet={caps}",
            *(f"{key}={value}" for key, value in SANDBOX),
            *(f"ReadWritePaths={path}" for path in self.writable_paths),
        ]
        return "".join(line + "\n" for line in lines)


def parse_unit(text: str) -> Unit:
    fields: dict[str, str] = {}
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if "=" not in line or line.startswith(("#", "[")):
            continue
        key, value = line.split("=", 1)
        if key == "Environment":
            for item in shlex.split(value):
                k, _, v = item.partition("=")
                env[k] = v
        else:
            fields[key] = value
    return Unit(
        fields.get("Description", ""),
        shlex.split(fields["ExecStart"]),
        fields.get("WorkingDirectory", "/"),
        env,
        user=fields.get("User"),
    )


def install_unit(root: Path, name: str, unit: Unit) -> Path:
    """Write the unit and enable it (the symlink `systemctl enable` would make)."""
    system = root / "etc" / "systemd" / "system"
    wants = system / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    path = system / name
    path.write_text(unit.render())
    link = wants / name
    if not link.is_symlink():
        link.symlink_to(path)
    return path


def enabled_units(root: Path) -> list[Path]:
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    return sorted(wants.glob("*.service")) if wants.is_dir() else []


def run_unit_directly(
    path: Path,
    log: Path,
    extra_env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> int:
    """Start the unit's service detached, as systemd would; return its pid. `prefix`
    goes before its command (the local cloud's machine_share)."""
    unit = parse_unit(path.read_text())
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*prefix, *unit.exec_start],
            cwd=unit.working_directory,
            env={**os.environ, **(extra_env or {}), **unit.environment},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # Reap it when it ends (as systemd would), so no zombie lingers.
    threading.Thread(target=proc.wait, name=f"unit-{path.stem}", daemon=True).start()
    return proc.pid
