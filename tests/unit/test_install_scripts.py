"""The OS install scripts' package steps, run by bash against stand-in package tools.

`os-packages.sh` is what knows each supported OS: its functions run here with
`cloud-init`, `apt-get` and `dnf` replaced by scripts that log their arguments,
and os-release files as each OS writes them. (A real Debian 12 run of
install-worker.sh is tests/system/test_provision_chroot.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cloudjhub.launch.provision import OS_PACKAGES, SCRIPTS, script_text

ROOT = Path(__file__).resolve().parents[2]
OS_RELEASE = {
    "ubuntu-22.04": 'ID=ubuntu\nVERSION_ID="22.04"\n',
    "ubuntu-24.04": 'ID=ubuntu\nVERSION_ID="24.04"\n',
    "debian-12": 'ID=debian\nVERSION_ID="12"\n',
    "amzn-2023": 'ID="amzn"\nVERSION_ID="2023"\n',
}
STAND_INS = ("cloud-init", "apt-get", "dnf")


def bash(tmp_path: Path, platform_release: str, commands: str) -> subprocess.CompletedProcess[str]:
    """Run `commands` after os-packages.sh, with the package tools logging to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in STAND_INS:
        stand_in = bin_dir / tool
        stand_in.write_text(f'#!/bin/sh\necho "{tool} $*" >>"{tmp_path}/calls.log"\n')
        stand_in.chmod(0o755)
    release = tmp_path / "os-release"
    release.write_text(platform_release)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CLOUDJHUB_OS_RELEASE": str(release),
        "HOME": str(tmp_path),
    }
    script = f"set -euo pipefail\n{(SCRIPTS / OS_PACKAGES).read_text()}\n{commands}\n"
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("platform", ["ubuntu-22.04", "ubuntu-24.04", "debian-12"])
def test_apt_waits_for_cloud_init_then_for_the_dpkg_lock(tmp_path: Path, platform: str) -> None:
    done = bash(tmp_path, OS_RELEASE[platform], "os_install python sudo; os_python")
    assert done.returncode == 0, done.stderr
    python = "python3.11" if platform == "ubuntu-22.04" else "python3"
    packages = "python3.11 python3.11-venv" if python == "python3.11" else (
        "python3 python3-venv python3-pip"
    )  # fmt: skip
    assert calls(tmp_path) == [
        "cloud-init status --wait",
        "apt-get -o DPkg::Lock::Timeout=600 update -q",
        f"apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends {packages} sudo",
    ]
    assert done.stdout.split() == [python]


def test_amazon_linux_2023_uses_dnf_and_python_3_11(tmp_path: Path) -> None:
    done = bash(
        tmp_path,
        OS_RELEASE["amzn-2023"],
        "os_install python node ssh-client hibernation-agent; os_python",
    )
    assert done.returncode == 0, done.stderr
    assert calls(tmp_path) == [
        "cloud-init status --wait",
        "dnf install -y -q python3.11 python3.11-pip nodejs nodejs-npm openssh-clients "
        "ec2-hibinit-agent",
    ]
    assert done.stdout.split() == ["python3.11"]


def test_cloud_init_finished_with_recoverable_errors_is_not_fatal(tmp_path: Path) -> None:
    bash(tmp_path, OS_RELEASE["ubuntu-24.04"], "true")  # makes the stand-ins
    (tmp_path / "bin" / "cloud-init").write_text("#!/bin/sh\nexit 2\n")
    done = bash(tmp_path, OS_RELEASE["ubuntu-24.04"], "wait_for_cloud_init; echo on")
    assert done.returncode == 0 and done.stdout == "on\n", done.stderr


@pytest.mark.parametrize(
    ("platform", "package"),
    [("ubuntu-22.04", "ec2-hibinit-agent"), ("amzn-2023", "ec2-hibinit-agent")],
)
def test_the_hibernation_agent_by_its_package_name(
    tmp_path: Path, platform: str, package: str
) -> None:
    done = bash(tmp_path, OS_RELEASE[platform], f"os_packages {platform} hibernation-agent")
    assert done.stdout.split() == [package], done.stderr


@pytest.mark.parametrize(
    ("platform", "package"),
    [
        ("amzn-2023", "amazon-efs-utils"),
        ("ubuntu-24.04", "nfs-common"),
        ("debian-12", "nfs-common"),
    ],
)
def test_the_shared_folders_nfs_client_by_its_package_name(
    tmp_path: Path, platform: str, package: str
) -> None:
    done = bash(tmp_path, OS_RELEASE[platform], f"os_packages {platform} nfs-client")
    assert done.stdout.split() == [package], done.stderr
    assert "packages+=(nfs-client)" in (SCRIPTS / "install-worker.sh").read_text()


@pytest.mark.parametrize(
    ("platform", "package"),
    [("amzn-2023", "iptables-nft"), ("ubuntu-22.04", "iptables"), ("debian-12", "iptables")],
)
def test_workers_get_iptables_for_the_agents_nfs_guard(
    tmp_path: Path, platform: str, package: str
) -> None:
    done = bash(tmp_path, OS_RELEASE[platform], f"os_packages {platform} iptables")
    assert done.stdout.split() == [package], done.stderr
    assert "packages+=(iptables)" in (SCRIPTS / "install-worker.sh").read_text()


def test_debian_has_no_hibernation_agent_and_says_so(tmp_path: Path) -> None:
    done = bash(tmp_path, OS_RELEASE["debian-12"], "os_install python hibernation-agent")
    assert done.returncode == 2
    assert "Debian 12 has no ec2-hibinit-agent package" in done.stderr
    assert calls(tmp_path) == []  # nothing installed


@pytest.mark.parametrize(
    "release", ['ID=centos\nVERSION_ID="9"\n', 'ID=ubuntu\nVERSION_ID="20.04"\n', ""]
)
def test_an_unsupported_os_stops_before_installing_anything(tmp_path: Path, release: str) -> None:
    done = bash(tmp_path, release, "os_install python")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("cloudjhub: unsupported OS")
    assert "Ubuntu 22.04 or 24.04, Debian 12, or Amazon Linux 2023" in line
    assert calls(tmp_path) == []


@pytest.mark.parametrize(
    ("node", "chp"), [(12, "4.6.3"), (18, "5.1.0"), (20, "5.3.0"), (22, "5.3.0")]
)
def test_the_proxy_is_pinned_to_a_release_the_node_runs(
    tmp_path: Path, node: int, chp: str
) -> None:
    done = bash(tmp_path, OS_RELEASE["debian-12"], f"chp_version {node}")
    assert done.stdout.strip() == chp


def test_the_manager_installs_the_pinned_proxy_for_its_node() -> None:
    text = (SCRIPTS / "install-manager.sh").read_text()
    assert '"configurable-http-proxy@$(chp_version "$node_major")"' in text
    assert "npm install -g --no-audit --no-fund configurable-http-proxy\n" not in text


def test_with_node_20_the_proxy_is_the_one_tests_run_here() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    here = lock["packages"]["node_modules/configurable-http-proxy"]["version"]
    done = subprocess.run(
        ["bash", "-c", f"{(SCRIPTS / OS_PACKAGES).read_text()}\nchp_version 20"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert done.stdout.strip() == here


@pytest.mark.parametrize("script", ["install-worker.sh", "install-manager.sh"])
def test_install_scripts_install_packages_only_through_os_packages(script: str) -> None:
    """Every package step goes through os_install, which waits for cloud-init and the
    package lock; the script sent is valid bash with its functions ahead of it."""
    text = (SCRIPTS / script).read_text()
    assert "os_install " in text
    for raw in ("apt-get", "apt ", "dnf ", "yum "):
        assert raw not in text, raw
    assert "python3 -m venv" not in text  # os_python: 3.11 where python3 is older
    checked = subprocess.run(["bash", "-n"], input=script_text(script), text=True)
    assert checked.returncode == 0
