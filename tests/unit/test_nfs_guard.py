"""The guard that keeps students' own NFS clients off EFS and out of the instance's
metadata (its role's credentials), and the IAM-signed TLS mount, on a real
instance's path.

Only a real instance (not the local cloud) mounts EFS, so these run the agent's
real-instance mount code with `iptables`, `ip6tables`, `mount` and `mount.efs`
replaced by scripts first on PATH that log their argv (and the fake iptables keeps
the rules it was given, so `-C` answers as the kernel's would). test_nfs_guard_kernel.py
tries the same rules on the real netfilter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cloudjhub.worker import server
from cloudjhub.worker.accounts import RunAs
from cloudjhub.worker.nfs_guard import ensure_nfs_guard
from cloudjhub.worker.paths import Layout
from cloudjhub.worker.protocol import AgentError, SharedFolder, StartRequest
from cloudjhub.worker.shared_mount import mount_shared

FIREWALL = """#!/bin/sh
echo "$(basename "$0") $*" >>"{log}"
rule="$(basename "$0") $(echo "$*" | sed -E 's/ -(C OUTPUT|I OUTPUT 1) / OUTPUT /')"
case " $* " in
  *" -C "*) grep -qxF -- "$rule" "{state}" 2>/dev/null ;;
  *" -I "*) echo "$rule" >>"{state}" ;;
esac
"""
MOUNT = '#!/bin/sh\necho "mount $*" >>"{log}"\n'
RANGE = "-m owner --uid-owner 1000-4294967294 -j REJECT"
# Inserted at the top: an image's own ACCEPT earlier in OUTPUT must not skip them.
EXPECTED = [
    f"iptables -w -I OUTPUT 1 -p tcp --dport 2049 {RANGE}",
    f"iptables -w -I OUTPUT 1 -p tcp -d 127.0.0.1 --dport 20049:21049 {RANGE}",
    f"iptables -w -I OUTPUT 1 -d 169.254.169.254 {RANGE}",
    f"ip6tables -w -I OUTPUT 1 -p tcp --dport 2049 {RANGE}",
    f"ip6tables -w -I OUTPUT 1 -p tcp -d ::1 --dport 20049:21049 {RANGE}",
    f"ip6tables -w -I OUTPUT 1 -d fd00:ec2::254 {RANGE}",
]


class InstanceLayout(Layout):
    """A real instance's layout under a test directory (a root other than / would
    otherwise mean "emulated")."""

    @property
    def emulated(self) -> bool:
        return False


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin dir holding the stand-ins, and nothing else on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, state = tmp_path / "calls.log", tmp_path / "rules"
    stand_ins = {"iptables": FIREWALL, "ip6tables": FIREWALL, "mount": MOUNT, "mount.efs": MOUNT}
    for name, text in stand_ins.items():
        (bin_dir / name).write_text(text.format(log=log, state=state))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def start_as_student(tmp_path: Path) -> None:
    home = tmp_path / "home" / "bob"
    home.mkdir(parents=True, exist_ok=True)
    shared = SharedFolder(file_system_id="fs-0abc1234", region="us-east-1", course="intro")
    layout = InstanceLayout(root=tmp_path / "root", volumes_dir=tmp_path / "volumes")
    mount_shared(layout, "bob", shared, RunAs(home=home, name="bob"))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs as root)")


@needs_root
def test_the_rules_go_in_before_efs_is_mounted_and_only_once(tools: Path, tmp_path: Path) -> None:
    start_as_student(tmp_path)
    made = calls(tmp_path)
    mounts = [i for i, call in enumerate(made) if call.startswith("mount ")]
    staging = tmp_path / "root" / "var" / "lib" / "cloudjhub" / "efs" / "root"
    assert mounts and made[mounts[0]] == f"mount -t efs -o tls,iam fs-0abc1234:/ {staging}"
    added = [call for call in made if " -I " in call]
    assert added == EXPECTED
    assert max(made.index(call) for call in added) < mounts[0]

    (tmp_path / "calls.log").unlink()
    start_as_student(tmp_path)  # the next start: every rule is checked, none added again
    again = calls(tmp_path)
    assert [call for call in again if " -I " in call] == []
    assert [call for call in again if " -C " in call] == [
        c.replace(" -I OUTPUT 1 ", " -C OUTPUT ") for c in EXPECTED
    ]


@needs_root
def test_no_iptables_means_no_shared_folder(tools: Path, tmp_path: Path) -> None:
    (tools / "iptables").unlink()
    with pytest.raises(AgentError, match="iptables is not installed") as refused:
        start_as_student(tmp_path)
    assert "\n" not in str(refused.value)
    assert calls(tmp_path) == []  # nothing mounted, no half-made firewall


@needs_root
def test_without_efs_utils_the_agent_refuses_to_mount(tools: Path, tmp_path: Path) -> None:
    """A plain NFS mount has neither TLS nor IAM: the file system's policy refuses it."""
    (tools / "mount.efs").unlink()
    with pytest.raises(AgentError, match="amazon-efs-utils is not installed") as refused:
        start_as_student(tmp_path)
    assert "\n" not in str(refused.value)
    assert [call for call in calls(tmp_path) if call.startswith("mount ")] == []


def test_without_ip6tables_the_ipv4_rules_still_go_in(tools: Path, tmp_path: Path) -> None:
    (tools / "ip6tables").unlink()
    ensure_nfs_guard()
    assert [call for call in calls(tmp_path) if " -I " in call] == EXPECTED[:3]


def test_a_rule_the_kernel_refuses_fails_the_start(tools: Path, tmp_path: Path) -> None:
    (tools / "iptables").write_text(
        "#!/bin/sh\n[ \"$2\" = -C ] && exit 1\necho 'no owner match' >&2\nexit 2\n"
    )
    with pytest.raises(AgentError, match="iptables could not add a rule: no owner match"):
        ensure_nfs_guard()


class ReachedTheHome(Exception):
    """Raised where the start would make the user's account (not on this machine)."""


def _instance_start(tmp_path: Path, resume: bool) -> None:
    request = StartRequest(
        user="bob", ip="127.0.0.1", port=9, cmd=[sys.executable], shared=None, resume=resume
    )
    layout = InstanceLayout(root=tmp_path / "root", volumes_dir=tmp_path / "volumes")
    server.start_server(layout, request)


@pytest.mark.parametrize("resume", [False, True])
def test_every_start_on_an_instance_adds_the_guard_first_without_a_shared_folder(
    tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resume: bool
) -> None:
    """Workers keep their role (ClientRootAccess on EFS) when the shared folder is
    turned off, and a reboot drops the rules: each start adds what is missing."""

    def reached(*_: object) -> None:
        raise ReachedTheHome

    monkeypatch.setattr(server, "prepare_home", reached)
    with pytest.raises(ReachedTheHome):
        _instance_start(tmp_path, resume)
    assert [call for call in calls(tmp_path) if " -I " in call] == EXPECTED

    (tools / "iptables").unlink()  # no guard, no start: nothing else is done
    with pytest.raises(AgentError, match="iptables is not installed"):
        _instance_start(tmp_path, resume)
