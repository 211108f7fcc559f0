"""`cloudjhub logs` and `cloudjhub status USER` through the CLI (CliRunner), against
moto in-process and real OpenSSH sshd playing the worker and the manager.

The worker's sshd runs the real agent (`cloudjhub-worker log`) in emulated mode; moto
gives instances loopback private IPs from a 127.x subnet, so the CLI reaches them
exactly as on a manager: found by tags, host keys from the hub's store by id.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cloudjhub import remote
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.cli import main
from cloudjhub.host_keys import HostKeyStore
from cloudjhub.kept_logs import KeptLogs
from cloudjhub.local import sshd
from cloudjhub.local.ports import free_port
from cloudjhub.tags import CLUSTER_TAG, ROLE_TAG, Role, tag_list
from tests.unit.conftest import CLUSTER, REGION
from tests.unit.test_hub_settings import minimal
from tests.unit.test_remote import keygen

AGENT = [sys.executable, "-m", "cloudjhub.worker.cli"]


@dataclasses.dataclass
class Machine:
    ip: str
    port: int
    host_key: str
    root: Path
    proc: subprocess.Popen[bytes]


def start_machine(root: Path, ip: str, client_pub: str) -> Machine:
    host_pub = sshd.ensure_host_key(root / "etc" / "ssh")
    port = free_port(ip)
    env = {"CLOUDJHUB_WORKER_ROOT": str(root), "CLOUDJHUB_VOLUMES_DIR": str(root.parent / "v")}
    proc = sshd.start_sshd(root, ip, port, client_pub, env=env)
    deadline = time.monotonic() + 10
    while not remote.tcp_open(ip, port, timeout=0.5):
        assert proc.poll() is None, "sshd exited"
        assert time.monotonic() < deadline, "sshd did not start listening"
        time.sleep(0.05)
    kind, data = host_pub.split()[:2]
    return Machine(ip, port, f"{kind} {data}", root, proc)


def stop_machine(machine: Machine) -> None:
    sshd.end_pids(sshd.with_descendants([machine.proc.pid]))
    machine.proc.terminate()
    machine.proc.wait(timeout=10)


@dataclasses.dataclass
class Site:
    """A manager's view: hub.json, server_config.json, the store, the kept tails."""

    ec2: LocalCloudEc2
    spec: WorkerSpec
    hub_json: Path
    store: HostKeyStore
    kept: KeptLogs
    client_key: Path
    client_pub: str
    tmp: Path
    machines: list[Machine] = dataclasses.field(default_factory=list)

    def worker(self, user: str, log: str = "", server: str = "") -> tuple[str, Machine]:
        inst = self.ec2.launch_worker(user, self.spec, f"t-{user}-{server}-{time.time_ns()}")
        if server:
            self.ec2.client.create_tags(
                Resources=[inst.id], Tags=[{"Key": "cloudjhub:server", "Value": server}]
            )
        assert inst.private_ip and inst.private_ip.startswith("127.93.")
        machine = start_machine(self.tmp / inst.id, inst.private_ip, self.client_pub)
        self.machines.append(machine)
        self.store.pin(inst.id, [machine.host_key])
        logs = machine.root / "var" / "log" / "cloudjhub"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{user}.log").write_text(log)
        return inst.id, machine


def logs(*args: str) -> Result:
    return CliRunner().invoke(main, ["logs", *args])


@pytest.fixture
def site(
    ec2: LocalCloudEc2, spec: WorkerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    tags = {CLUSTER_TAG: CLUSTER, "Name": "loopback"}
    vpc = ec2.ensure_vpc("127.93.0.0/16", tags)
    subnet = ec2.ensure_subnet(vpc, "127.93.1.0/24", tags)
    client_key, client_pub = keygen(tmp_path / "id_ed25519")
    config = tmp_path / "server_config.json"
    config.write_text(
        json.dumps(
            {
                "CLUSTER_NAME": CLUSTER,
                "REGION": REGION,
                "WORKER_AMI": spec.image_id,
                "SUBNET_ID": subnet,
                "WORKER_SECURITY_GROUPS": list(spec.security_group_ids),
                "KEY_NAME": spec.key_name,
                "WORKER_USERNAME": getpass.getuser(),
                "SSH_KEY_FILE": str(client_key),
            }
        )
    )
    hub: dict[str, Any] = minimal()
    hub["spawner"] = {
        "server_config_file": str(config),
        "worker_command": AGENT,
        "usage_log": str(tmp_path / "usage.jsonl"),
        "host_key_store": str(tmp_path / "host_keys.json"),
    }
    hub_json = tmp_path / "hub.json"
    hub_json.write_text(json.dumps(hub))
    monkeypatch.setenv("CLOUDJHUB_HUB_SETTINGS", str(hub_json))
    made = Site(
        ec2=ec2,
        spec=dataclasses.replace(spec, subnet_id=subnet),
        hub_json=hub_json,
        store=HostKeyStore(tmp_path / "host_keys.json"),
        kept=KeptLogs(tmp_path / "kept-logs"),  # the default: beside the usage log
        client_key=client_key,
        client_pub=client_pub,
        tmp=tmp_path,
    )
    try:
        yield made
    finally:
        for machine in made.machines:
            stop_machine(machine)


def set_port(site: Site, port: int) -> None:
    """Each test's sshd has a port of its own: the hub's SSH_PORT says which."""
    config = json.loads(
        Path(json.loads(site.hub_json.read_text())["spawner"]["server_config_file"]).read_text()
    )
    config["SSH_PORT"] = port
    Path(json.loads(site.hub_json.read_text())["spawner"]["server_config_file"]).write_text(
        json.dumps(config)
    )


def test_a_running_users_log_comes_from_their_instance(site: Site) -> None:
    lines = [f"jupyter says {n}" for n in range(5)]
    inst, default = site.worker("alice", "\n".join(lines) + "\n")
    _, named = site.worker("alice", "the gpu server\n", server="gpu")
    watch_log = default.root / "var" / "log" / "cloudjhub" / "alice.watch.log"
    watch_log.write_text("watch started\n")
    set_port(site, default.port)

    result = logs(CLUSTER, "alice", "--lines", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "jupyter says 3\njupyter says 4\n"
    agent = logs(CLUSTER, "alice", "--agent")
    assert (agent.exit_code, agent.stdout) == (0, "watch started\n")

    # A named server is told apart by its tag; one whose agent never ran says so.
    set_port(site, named.port)
    gpu = logs(CLUSTER, "alice", "--server", "gpu")
    assert (gpu.exit_code, gpu.stdout) == (0, "the gpu server\n"), gpu.output
    empty = logs(CLUSTER, "alice", "--server", "gpu", "--agent")
    assert empty.exit_code == 1 and "agent's log is empty" in empty.output

    # A host key that is not the pinned one is refused: nothing is printed.
    set_port(site, default.port)
    other = HostKeyStore(site.tmp / "other.json")
    other.pin(inst, [named.host_key])
    hub = json.loads(site.hub_json.read_text())
    hub["spawner"]["host_key_store"] = str(site.tmp / "other.json")
    site.hub_json.write_text(json.dumps(hub))
    refused = logs(CLUSTER, "alice")
    assert refused.exit_code == 1 and "host key" in refused.output
    assert "jupyter says" not in refused.output


def test_stopped_terminated_and_unknown(site: Site) -> None:
    inst = site.ec2.launch_worker("alice", site.spec, "t-stopped").id
    site.ec2.client.stop_instances(InstanceIds=[inst])
    nothing = logs(CLUSTER, "alice")
    assert nothing.exit_code == 1
    assert nothing.output.strip().splitlines() == [
        f"error: alice's instance {inst} is stopped, and the hub kept no log of it"
    ]
    site.kept.keep("alice", "", inst, "stop", ["kept line 1", "kept line 2"])
    stopped = logs(CLUSTER, "alice")
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout == "kept line 1\nkept line 2\n"
    assert f"alice's instance {inst} is stopped; last 2 line(s) the hub kept" in stopped.stderr

    unknown = logs(CLUSTER, "bob")
    assert unknown.exit_code == 2
    assert unknown.output == f"error: USER: bob has no instance in cluster {CLUSTER}\n"

    site.ec2.client.terminate_instances(InstanceIds=[inst])
    gone = logs(CLUSTER, "alice")
    assert gone.exit_code == 2
    assert (
        gone.output == f"error: USER: alice's instance {inst} is terminated; its log went with it\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["alice", "--lines", "0"],
        ["alice", "--lines", "10001"],
        ["a/b"],
        ["al ice"],
        ["alice", "--server", "../x"],
        ["alice", "--hub-settings", "/nonexistent/hub.json"],
    ],
)
def test_bad_input_is_one_line_exit_2(site: Site, args: list[str]) -> None:
    result = logs(CLUSTER, *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")


def test_status_user_shows_the_last_failed_spawn(site: Site) -> None:
    inst = site.ec2.launch_worker("alice", site.spec, "t-status")
    site.ec2.launch_worker("bob", site.spec, "t-status-bob")
    message = f"Jupyter failed to start on your instance {inst.id}:\nImportError: no module x"
    site.kept.keep("alice", "", inst.id, "failed-spawn", message.splitlines())
    result = CliRunner().invoke(main, ["status", CLUSTER, "alice"])
    assert result.exit_code == 0, result.output
    assert inst.id in result.output and "bob" not in result.output
    assert "failed to spawn" in result.output
    assert "  ImportError: no module x" in result.output
    as_json = json.loads(CliRunner().invoke(main, ["status", CLUSTER, "alice", "--json"]).output)
    assert [r["instance_id"] for r in as_json["instances"]] == [inst.id]
    assert as_json["last_failed_spawn"]["lines"][-1] == "ImportError: no module x"


def test_via_manager_runs_the_managers_cloudjhub_logs(site: Site) -> None:
    reply = site.ec2.client.run_instances(
        ImageId=site.spec.image_id,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        SubnetId=site.spec.subnet_id,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": tag_list({CLUSTER_TAG: CLUSTER, ROLE_TAG: Role.MANAGER.value}),
            }
        ],
    )["Instances"][0]
    manager = start_machine(site.tmp / "manager", reply["PrivateIpAddress"], site.client_pub)
    site.machines.append(manager)
    # The manager's cloudjhub, played by a script that says what it was asked.
    bin_dir = site.tmp / "manager-bin"
    bin_dir.mkdir()
    fake = bin_dir / "cloudjhub"
    fake.write_text("#!/bin/sh\necho \"$@\"\necho 'error: from the manager' >&2\nexit 2\n")
    fake.chmod(0o755)
    record = site.tmp / "record.json"
    pins = {reply["InstanceId"]: [manager.host_key]}
    record.write_text(json.dumps({"cluster": CLUSTER, "host_keys": pins}))
    common = ["--key-file", str(site.client_key), "--server-username", getpass.getuser()]
    common += ["--ssh-port", str(manager.port), "--connect-via", "private"]
    common += ["--manager-bin", str(bin_dir)]
    result = logs(
        CLUSTER,
        "alice",
        "--via-manager",
        "--server",
        "gpu",
        "--lines",
        "5",
        *common,
        "--record",
        str(record),
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == f"logs {CLUSTER} alice --lines 5 --server gpu\n"
    assert result.stderr == "error: from the manager\n"

    record.write_text(
        json.dumps(
            {
                "cluster": CLUSTER,
                "host_keys": {
                    reply["InstanceId"]: [
                        site.client_pub.strip().split(" ", 2)[0] + " " + site.client_pub.split()[1]
                    ]
                },
            }
        )
    )
    refused = logs(CLUSTER, "alice", "--via-manager", *common, "--record", str(record))
    assert refused.exit_code == 1
    assert "host key" in refused.output and "logs alpha" not in refused.output
