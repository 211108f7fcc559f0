"""nfs_guard's rules on the real netfilter: the agent's own code adds them inside a new
network namespace (`unshare --net`, so the host's firewall is untouched), then a
process running as an account's uid is refused by the kernel where root gets through:
NFS (port 2049, on loopback), efs-utils' local TLS tunnel port (127.0.0.1:20049) and the
instance metadata address (169.254.169.254, and fd00:ec2::254, put on the namespace's
loopback to stand in), even with an ACCEPT already in OUTPUT, as docker leaves one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

from tests.helpers import missing_here

PROBE = ["unshare", "--net", "iptables", "-w", "-S", "OUTPUT"]

SCRIPT = textwrap.dedent(
    """
    import errno, json, os, socket, subprocess, sys
    from cloudjhub.worker.accounts import FIRST_USER_UID
    from cloudjhub.worker.nfs_guard import ensure_nfs_guard

    def sh(*argv):
        subprocess.run(argv, check=True, capture_output=True)

    sh("ip", "link", "set", "lo", "up")
    sh("ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
    sh("ip", "-6", "addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad")
    # What docker or firewalld leave: an ACCEPT already in OUTPUT.
    sh("iptables", "-w", "-A", "OUTPUT", "-j", "ACCEPT")
    sh("ip6tables", "-w", "-A", "OUTPUT", "-j", "ACCEPT")
    ensure_nfs_guard()
    ensure_nfs_guard()  # a second start adds nothing
    rules = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    rules6 = subprocess.run(["ip6tables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    targets = {"nfs": ("127.0.0.1", 2049), "tunnel": ("127.0.0.1", 20049),
               "imds": ("169.254.169.254", 80),
               "imds6": ("fd00:ec2::254", 80)}
    listeners = []
    for host, port in targets.values():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind((host, port))
        s.listen(8)
        listeners.append(s)

    def attempt(uid):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            out = {}
            try:
                if uid:
                    os.setgid(uid)
                    os.setuid(uid)
                for name, (host, port) in targets.items():
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    c = socket.socket(family, socket.SOCK_STREAM)
                    c.settimeout(5)
                    try:
                        c.connect((host, port))
                        out[name] = "connected"
                    except OSError as exc:
                        out[name] = errno.errorcode.get(exc.errno, str(exc))
                    finally:
                        c.close()
            finally:
                os.write(write, json.dumps(out).encode())
                os._exit(0)
        os.close(write)
        data = b""
        while chunk := os.read(read, 4096):
            data += chunk
        os.waitpid(pid, 0)
        return json.loads(data)

    print(json.dumps({
        "root": attempt(0),
        "student": attempt(FIRST_USER_UID + 4242),
        "rules": rules.count("-j REJECT"),
        "rules6": rules6.count("-j REJECT"),
    }))
    """
)


def _netfilter_here() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "a network namespace and iptables need root (CI runs as root)"
    for tool in ("unshare", "iptables", "ip6tables", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(PROBE, capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        return f"unshare --net with iptables is refused here: {probe.stderr.strip()[-200:]}"
    return None


def test_the_kernel_refuses_an_accounts_uid_and_lets_root_through() -> None:
    why = _netfilter_here()
    if why is not None:
        missing_here(why)
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["root"] == {
        "nfs": "connected",
        "tunnel": "connected",
        "imds": "connected",
        "imds6": "connected",
    }
    assert seen["student"] == {
        "nfs": "ECONNREFUSED",
        "tunnel": "ECONNREFUSED",
        "imds": "ECONNREFUSED",
        "imds6": "ECONNREFUSED",
    }
    assert (seen["rules"], seen["rules6"]) == (3, 3)  # added once, not again
