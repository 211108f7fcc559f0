"""The launcher records the manager's pinned host keys with the resources it created,
and a re-run verifies the manager with them: cloud-init prints the keys to the
console on an instance's first boot only, so a stopped-then-started manager has
none there. Everything is real but SSH, which is played by a fake `run_on` that
records which host keys each connection was pinned to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudjhub import remote
from cloudjhub.aws.client import CloudError
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.launch.cluster import Created, Launch, LaunchResult
from cloudjhub.launch.groups import ClusterGroups
from cloudjhub.launch.options import LaunchOptions
from cloudjhub.remote import CONSOLE_BEGIN, CONSOLE_END
from cloudjhub.tags import Role
from tests.unit.conftest import CLUSTER, Network, SshKey

KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMHjkoLd3wfmGRS9mxPpB9VIRA+1N1PKsGeW3UYkBqQZ",)
FIRST_BOOT = f"cloud-init: booting\n{CONSOLE_BEGIN}\n{KEYS[0]}\n{CONSOLE_END}\n"
LATER_BOOT = "cloud-init: booting\ncloud-init: keys-to-console already ran on this instance\n"


@pytest.fixture
def opts(
    tmp_path: Path, network: Network, key_name: str, ssh_key: SshKey, worker_ami: str
) -> LaunchOptions:
    return LaunchOptions(
        cluster=CLUSTER,
        base_ami=worker_ami,
        private_subnet=network.subnet_id,
        public_subnet=network.subnet_id,
        key_name=key_name,
        key_file=ssh_key.private,
        connect_via="private",
        output_dir=tmp_path,
        timeout=2,
        poll=0,
    )


@pytest.fixture
def pinned_to(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """SSH that answers every command, as the manager would; records each pin."""
    seen: list[tuple[str, ...]] = []

    def run_on(target: remote.Target, argv: list[str], *_: Any, **__: Any) -> Any:
        seen.append(target.host_keys)
        reply = json.dumps(
            {"worker_public_key": "ssh-ed25519 AAAA workers", "admin_password": "x" * 32}
        )
        return remote.CommandResult(0, reply if "setup-manager" in argv else "", "")

    def no_network(target: remote.Target) -> None:
        raise AssertionError(f"a real SSH connection to {target.host}")

    monkeypatch.setattr(remote, "run_on", run_on)
    monkeypatch.setattr(remote, "_connect", no_network)
    return seen


def console_shows(monkeypatch: pytest.MonkeyPatch, ec2: LocalCloudEc2, text: str) -> None:
    monkeypatch.setattr(ec2, "console_output", lambda _id, _type: text)


def launch_manager(ec2: LocalCloudEc2, opts: LaunchOptions, groups: ClusterGroups) -> Launch:
    """The manager steps of a launch (create or reuse, start, set up), then the record."""
    launch = Launch(ec2, opts, say=lambda _line: None)
    launch._preinstalled = "/opt/cloudjhub/bin"  # as the local cloud's base image: no OS install
    manager = launch.manager(groups)
    launch.setup_manager(manager, opts.base_ami, groups)
    result = LaunchResult("http://hub/", manager, opts.base_ami, groups, Created(), 1.0)
    launch.write_record(result)
    return launch


def test_a_relaunch_verifies_a_restarted_manager_with_the_recorded_keys(
    ec2: LocalCloudEc2,
    opts: LaunchOptions,
    worker_group: str,
    pinned_to: list[tuple[str, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    groups = ClusterGroups(worker_group, worker_group, worker_group)
    console_shows(monkeypatch, ec2, FIRST_BOOT)
    launch_manager(ec2, opts, groups)
    (manager,) = [i.id for i in ec2.cluster_instances(Role.MANAGER)]
    first_record = json.loads(opts.record_file.read_text())

    ec2.client.stop_instances(InstanceIds=[manager])
    console_shows(monkeypatch, ec2, LATER_BOOT)
    pinned_to.clear()
    second = launch_manager(ec2, opts, groups)

    assert ec2.describe([manager])[0].state == "running"
    assert pinned_to and set(pinned_to) == {KEYS}
    assert second.pins == {manager: KEYS}
    assert first_record["host_keys"] == {manager: list(KEYS)}
    assert json.loads(opts.record_file.read_text())["host_keys"] == {manager: list(KEYS)}


def test_without_a_record_the_keys_come_from_the_console_or_nowhere(
    ec2: LocalCloudEc2,
    opts: LaunchOptions,
    worker_group: str,
    pinned_to: list[tuple[str, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record is what a relaunch trusts; lose it and a restarted manager cannot
    be verified (the console no longer shows its keys): refused, never trusted blindly."""
    groups = ClusterGroups(worker_group, worker_group, worker_group)
    console_shows(monkeypatch, ec2, FIRST_BOOT)
    (manager,) = launch_manager(ec2, opts, groups).pins
    ec2.client.stop_instances(InstanceIds=[manager])
    opts.record_file.unlink()
    console_shows(monkeypatch, ec2, LATER_BOOT)
    pinned_to.clear()
    with pytest.raises(CloudError, match=f"{manager} published no SSH host key"):
        launch_manager(ec2, opts, groups)
    assert pinned_to == []


@pytest.mark.parametrize(
    "record",
    [
        "{broken",
        json.dumps({"cluster": "other", "host_keys": {"i-0123456789abcdef0": list(KEYS)}}),
        json.dumps({"cluster": CLUSTER, "host_keys": {"i-0123456789abcdef0": ["ssh-rsa $(x)"]}}),
    ],
    ids=["not-json", "other-cluster", "malformed-key"],
)
def test_a_record_that_is_not_this_clusters_or_not_well_formed_pins_nothing(
    ec2: LocalCloudEc2, opts: LaunchOptions, record: str
) -> None:
    opts.record_file.write_text(record)
    said: list[str] = []
    assert Launch(ec2, opts, say=said.append).pins == {}
