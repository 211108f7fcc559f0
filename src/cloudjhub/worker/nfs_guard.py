"""Keep students' own processes from speaking NFS to the shared folder's EFS, and
from the instance's credentials.

EFS believes whatever uid an NFS client claims, and its mount targets admit port 2049
from every worker. Its file system policy (launch/iam_shared.py) admits only TLS
mounts signed with the workers' role; that role's credentials are in the instance
metadata service (IMDS). A student with a terminal who could read them and run a
user-space NFS client could claim uid 0 and write the whole file system, bypassing
the read-only mount. And a worker keeps its role (the shared folder's, ClientRootAccess
on EFS) even when the shared folder is later turned off, and rules go with a reboot.
So at every start on a real instance, before anything else (server.py), OUTPUT rules
reject, from every
non-system local uid: NFS (port 2049, and efs-utils' local TLS tunnel on
127.0.0.1:20049-21049) and IMDS (169.254.169.254, and fd00:ec2::254 on Nitro
instances with IPv6: EC2 User Guide, "Access instance metadata for an EC2
instance"). A uid range, not "not root": the kernel's own NFS client sockets have no
owner and must still pass, and root (the agent, efs-utils) still reaches IMDS. The
rules are inserted at the top of OUTPUT, so an image's own earlier ACCEPT (docker,
firewalld) cannot skip them. No iptables, no start.
"""

from __future__ import annotations

import shutil
import subprocess

from .accounts import FIRST_USER_UID
from .protocol import AgentError

# Every uid an account can have except the system's (and -1, "no uid").
OWNERS = ["-m", "owner", "--uid-owner", f"{FIRST_USER_UID}-4294967294", "-j", "REJECT"]
IMDS_V4 = "169.254.169.254"
IMDS_V6 = "fd00:ec2::254"
# EFS itself, efs-utils' stunnel ports (its default tls_port_range), then IMDS (any
# protocol, any port).
RULES = {
    "iptables": [
        ["-p", "tcp", "--dport", "2049", *OWNERS],
        ["-p", "tcp", "-d", "127.0.0.1", "--dport", "20049:21049", *OWNERS],
        ["-d", IMDS_V4, *OWNERS],
    ],
    "ip6tables": [
        ["-p", "tcp", "--dport", "2049", *OWNERS],
        ["-p", "tcp", "-d", "::1", "--dport", "20049:21049", *OWNERS],
        ["-d", IMDS_V6, *OWNERS],
    ],
}
TIMEOUT = 30.0


def ensure_nfs_guard() -> None:
    """Add the rules that are missing (each start checks; nothing is added twice)."""
    for tool, rules in RULES.items():
        path = shutil.which(tool)
        if path is None:
            if tool == "iptables":
                raise AgentError(
                    "worker guard: iptables is not installed, so students could reach "
                    "EFS and the instance's role directly; refusing to start (install "
                    "the iptables package)"
                )
            continue  # no IPv6 firewall tool: no IPv6 stack to guard on these images
        for rule in rules:
            if _iptables(path, ["-C", "OUTPUT"], rule).returncode != 0:
                added = _iptables(path, ["-I", "OUTPUT", "1"], rule)
                if added.returncode != 0:
                    detail = (added.stderr.strip().splitlines() or ["no error output"])[-1]
                    raise AgentError(f"worker guard: {tool} could not add a rule: {detail[:300]}")


def _iptables(path: str, action: list[str], rule: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [path, "-w", *action, *rule],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"worker guard: {path} failed: {exc}") from None
