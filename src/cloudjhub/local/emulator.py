"""The fleet emulator: plays the machines behind the instances moto reports.

For every instance EC2 reports running it boots a "machine": a root
directory that persists like an EBS root volume, a host key printed to the
console as cloud-init would, and a real sshd on the instance's private IP
that runs commands inside that root. When EC2 says the instance stopped,
every process of the machine is ended by pid; when it is terminated, its
root directory goes too.

Two more things a real machine does are played too. A machine that shuts
itself down (the worker's self-stop watchdog writes `run/shutdown` under its
root instead of calling `shutdown`) is stopped through EC2, as
InstanceInitiatedShutdownBehavior=stop would. And a stop with Hibernate=True
(moto ignores the flag; `motoserver` records it) suspends the machine's
programs with SIGSTOP instead of ending them, and the next start resumes them
with SIGCONT: only its sshd is ended and started afresh.

Machines boot and halt concurrently, up to `parallel` at a time: a storm starts or
stops hundreds of instances in one EC2 call, and one after another (an sshd, a host
key and a pid sweep each) would keep the last user waiting for all the others.

Under `--like-aws` the console is the AWS behaviour layer's (`console`), and
host keys are printed on an instance's first boot only, as cloud-init does.
Only EC2 taking an instance down (stopping, stopped, shutting-down, terminated,
a new start) or the instance going away (`fleet_states`: where a pass reads the
fleet, and when absent means gone) halts its machine: one that shows `pending`
or is missing from one listing is not halted, so it never boots twice unasked.

What it does is logged to `emulator.log` in the state dir (`emulator_log`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..aws.client import CloudError, Instance
from ..aws.local import LocalCloudEc2
from ..launch.units import enabled_units, run_unit_directly
from ..remote import CONSOLE_BEGIN, CONSOLE_END
from ..tags import ROLE_TAG, Role
from . import motoserver, processes, sshd
from .emulator_log import LocalCloudLog
from .fleet_states import Absences, StateSource, api_source
from .machine_share import MachineShare
from .processes import INSTANCE_ENV
from .shared_dirs import delete_unmounted, unmount_instance, unmount_instances

log = logging.getLogger(__name__)

# Where, under an instance root, the worker asks for the machine to be shut down.
SHUTDOWN_REQUEST = Path("run") / "shutdown"
_T = TypeVar("_T")
# How many machines boot or halt at once.
PARALLEL = 8
# The states in which EC2 has taken a machine down. A booted machine whose instance
# shows `pending` (a launch's, shown late) or is missing from one listing is still up.
WENT_DOWN = frozenset({"stopping", "stopped", "shutting-down", "terminated"})


@dataclass
class Machine:
    instance_id: str
    root: Path
    ip: str
    sshd: subprocess.Popen[bytes] | None = None
    boot: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)


class FleetEmulator:
    """Reconciles emulated machines with EC2 state, every `interval` seconds."""

    def __init__(
        self,
        ec2: LocalCloudEc2,
        state_dir: Path,
        ssh_port: int,
        interval: float = 0.5,
        publish_console: bool = True,
        console: Callable[[str, str], None] = motoserver.set_console_output,
        host_keys_once: bool = False,
        role_endpoint: str | None = None,
        role_credentials: dict[str, str] | None = None,
        trusts_key: Callable[[str, str], bool] | None = None,
        parallel: int = PARALLEL,
        states: StateSource | None = None,
        share: MachineShare | None = None,
    ) -> None:
        self.ec2 = ec2
        # Where each pass reads the fleet (default: DescribeInstances through `ec2`).
        self.states = states or api_source(ec2)
        self._absences = Absences()
        # Machines halted because their instance went from every listing, by the boot
        # count they had: one listed again boots only after a new start.
        self._halted_gone: dict[str, int] = {}
        self.state_dir = state_dir
        self.ssh_port = ssh_port
        self.interval = interval
        self.publish_console = publish_console
        self.console = console
        self.host_keys_once = host_keys_once
        # Where an instance with a role sends its EC2 calls (default: where we do).
        self.role_endpoint = role_endpoint
        # What IMDS would hand an instance with a role (default: an outside endpoint's
        # placeholders).
        self.role_credentials = role_credentials or motoserver.LOCAL_CREDENTIALS_FOR_ROLE
        # Which key pairs a machine lets in (None: any the endpoint reports, for an
        # outside endpoint we cannot watch).
        self.trusts_key = trusts_key
        self._keys_published: set[str] = set()
        self.machines: dict[str, Machine] = {}
        # Hibernated instances: the pids suspended with SIGSTOP, resumed on the next boot.
        self.suspended: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.parallel = max(1, parallel)
        # known_hosts is rewritten by each boot; boots run side by side.
        self._hosts_lock = threading.Lock()
        self.known_hosts = state_dir / "known_hosts"
        self.log_file = LocalCloudLog(state_dir)
        # Where users' machines run (the demo's cgroup, machine_share); None: anywhere.
        self.share = share

    @property
    def volumes_dir(self) -> Path:
        return self.state_dir / "volumes"

    @property
    def shared_dir(self) -> Path:
        """The local cloud's EFS: a directory per file system id (local/shared_dirs.py)."""
        return self.state_dir / "efs"

    def root_of(self, instance_id: str) -> Path:
        return self.state_dir / "instances" / instance_id

    def start(self) -> None:
        sshd.sshd_binary()  # fail early, with the install hint
        self.log_file.open()
        self.reconcile()
        self._thread = threading.Thread(target=self._run, name="fleet-emulator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile()
            except Exception:
                log.exception("fleet emulator: reconcile failed")

    def stop(self) -> None:
        """End every machine from our own records, without asking EC2 (which may be
        gone already), then anything else of the fleet's that is still alive."""
        self._stop.set()
        if self._thread is not None:
            # A reconcile stuck on an EC2 call that retries holds no lock; don't wait long.
            self._thread.join(timeout=5)
        with self._lock:
            self._each(self._halt, list(self.machines.values()))
            self.machines.clear()
            for pids in self.suspended.values():
                _signal(pids, signal.SIGKILL)
            self.suspended.clear()
            sshd.end_pids(processes.fleet_pids(self.state_dir))
            unmount_instances(self.state_dir)
        if self.share is not None:
            self.share.close()
        self.log_file.close()

    def reconcile(self) -> None:
        with self._lock:
            shut_down = self._guest_shutdowns()
        # EC2 is asked outside the lock: an endpoint that went away makes botocore
        # retry for a while, and stop() must not wait for that.
        self._stop_shut_down(shut_down)
        listing = self.states()
        instances = listing.instances
        with self._lock:
            # Any running instance may boot in this pass: a new one, or one that was
            # stopped and started since the last look (its boot count changed).
            booting = any(
                i.state == "running"
                and i.private_ip
                and (
                    i.id not in self.machines
                    or motoserver.boot_count(i.id) != self.machines[i.id].boot
                )
                for i in instances.values()
            )
        keys = self.ec2.public_keys() if booting else {}
        with self._lock:
            if self._stop.is_set():
                return
            down: list[tuple[Machine, bool]] = []
            gone = self._absences.gone(listing, list(self.machines))
            for instance_id, machine in list(self.machines.items()):
                inst = instances.get(instance_id)
                if inst is None:
                    if instance_id in gone:
                        log.info("%s is gone from EC2; its machine halts", instance_id)
                        self._halted_gone[instance_id] = machine.boot
                        down.append((machine, False))
                        del self.machines[instance_id]
                    continue  # maybe a partial listing: not gone yet
                rebooted = motoserver.boot_count(instance_id) != machine.boot
                if inst.state in WENT_DOWN or rebooted:
                    hibernated = inst.live and motoserver.stopped_with_hibernate(instance_id)
                    down.append((machine, hibernated))
                    del self.machines[instance_id]
            self._each(lambda m: self._suspend(m[0]) if m[1] else self._halt(m[0]), down)
            up = [
                inst
                for inst in instances.values()
                if inst.state == "running"
                and inst.private_ip
                and inst.id not in self.machines
                and self._halted_gone.get(inst.id) != motoserver.boot_count(inst.id)
                # one whose key was not read this pass boots on the next
                and not (inst.key_name and inst.key_name not in keys)
            ]
            self._each(lambda i: self._boot(i, self._authorized_key(i, keys)), up)
            for instance_id in list(self.suspended):
                inst = instances.get(instance_id)
                if inst is None or inst.gone:  # terminated while hibernated
                    _signal(self.suspended.pop(instance_id), signal.SIGKILL)
            for inst in instances.values():
                root = self.root_of(inst.id)
                if inst.state == "terminated" and root.exists():
                    unmount_instance(root)
                    delete_unmounted(root)  # never the shared folder through a bind

    def _guest_shutdowns(self) -> list[str]:
        """Machines that shut themselves down (their shutdown request is consumed)."""
        down = []
        for machine in self.machines.values():
            request = machine.root / SHUTDOWN_REQUEST
            if request.exists():
                request.unlink(missing_ok=True)
                down.append(machine.instance_id)
        return down

    def _stop_shut_down(self, instance_ids: list[str]) -> None:
        """A machine that shut itself down is stopped by EC2 (InstanceInitiatedShutdownBehavior
        is "stop" for every worker); the stop is guarded like any other."""
        for instance_id in instance_ids:
            try:
                self.ec2.stop(instance_id)
            except CloudError as exc:
                log.warning("%s shut itself down, but EC2 refused: %s", instance_id, exc)
            else:
                log.info("%s shut itself down; EC2 stops it", instance_id)

    def _authorized_key(self, inst: Instance, keys: dict[str, str]) -> str:
        """The key the machine lets in: its key pair's, if the local cloud made or
        imported it with its own credentials. Any other boots a machine that trusts
        no key, so SSH with it is refused (the instance itself runs, as EC2 says)."""
        name = inst.key_name or ""
        public_key = keys.get(name, "")
        if public_key and self.trusts_key is not None and not self.trusts_key(name, public_key):
            log.warning(
                "%s: key pair %r was not made by the local cloud; not trusted", inst.id, name
            )
            return ""
        return public_key

    def _each(self, act: Callable[[_T], object], items: Iterable[_T]) -> None:
        """act on every item, up to `parallel` at a time. A failure is logged: one
        machine must not keep the others down (or up)."""
        todo = list(items)
        if not todo:
            return

        def guarded(item: _T) -> None:
            try:
                act(item)
            except Exception:
                log.exception("fleet emulator: a machine failed to change state")

        with ThreadPoolExecutor(min(self.parallel, len(todo))) as pool:
            list(pool.map(guarded, todo))

    def _boot(self, inst: Instance, public_key: str) -> None:
        assert inst.private_ip
        root = self.root_of(inst.id)
        resumed = self.suspended.pop(inst.id, None)
        if resumed is not None:
            # Resume programs before sshd is up, so nobody logs in to a frozen machine.
            _signal(resumed, signal.SIGCONT)
            log.info("resuming %s (%d processes)", inst.id, len(resumed))
        else:
            # /run is a tmpfs: a fresh boot finds no pids, tokens or requests of the last one.
            shutil.rmtree(root / "run", ignore_errors=True)
        (root / SHUTDOWN_REQUEST).unlink(missing_ok=True)
        etc = root / "etc" / "ssh"
        host_key = sshd.ensure_host_key(etc)
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        env = {
            INSTANCE_ENV: inst.id,
            processes.FLEET_ENV: str(self.state_dir),
            "CLOUDJHUB_WORKER_ROOT": str(root),
            "CLOUDJHUB_VOLUMES_DIR": str(self.volumes_dir),
            "CLOUDJHUB_SHARED_DIR": str(self.shared_dir),
            **self._instance_role_env(inst),
        }
        machine = Machine(inst.id, root, inst.private_ip, boot=motoserver.boot_count(inst.id))
        # Users' machines never take the hub's CPU on AWS; the manager runs the hub.
        user_machine = inst.tags.get(ROLE_TAG) != Role.MANAGER.value
        prefix = self.share.prefix() if self.share is not None and user_machine else []
        machine.sshd = sshd.start_sshd(
            root, inst.private_ip, self.ssh_port, public_key, env, prefix
        )
        # Recorded at once (the reconcile holding the lock waits for every boot), so a
        # boot that fails after this is not booted twice.
        self.machines[inst.id] = machine
        if self.publish_console:
            keys_printed = inst.id in self._keys_published
            self.console(inst.id, self._console_text(inst.id, host_key, keys_printed))
            # Printed once the console has them: a boot that failed before does not count.
            self._keys_published.add(inst.id)
        self._record_known_host(inst.private_ip, host_key)
        if resumed is None:
            for unit in enabled_units(root):
                run_unit_directly(unit, root / "var" / "log" / f"{unit.stem}.log", env, prefix)
                log.info("%s: started %s", inst.id, unit.name)
        log.info("booted %s at %s:%s", inst.id, inst.private_ip, self.ssh_port)

    def _console_text(self, instance_id: str, host_key: str, keys_printed: bool) -> str:
        if self.host_keys_once and keys_printed:
            return "cloud-init: booting\ncloud-init: keys-to-console already ran on this instance\n"
        return f"cloud-init: booting\n{CONSOLE_BEGIN}\n{host_key}\n{CONSOLE_END}\n"

    def _instance_role_env(self, inst: Instance) -> dict[str, str]:
        """What IMDS would hand an instance with a role: credentials for the endpoint.
        Only to the manager (an allow-list: a builder, or any instance given a profile
        later, gets nothing): the local cloud has only the manager's credentials, and
        a worker's profile (the shared folder's) is of no use to an emulated worker,
        which mounts a directory."""
        if not inst.instance_profile or inst.tags.get(ROLE_TAG) != Role.MANAGER.value:
            return {}
        return {
            "AWS_ENDPOINT_URL": self.role_endpoint or str(self.ec2.client.meta.endpoint_url),
            "AWS_DEFAULT_REGION": str(self.ec2.client.meta.region_name),
            **self.role_credentials,
        }

    def _record_known_host(self, ip: str, host_key: str) -> None:
        """For endpoints whose console we cannot write: an admin-kept known_hosts."""
        name = f"[{ip}]:{self.ssh_port}"
        with self._hosts_lock:
            self._write_known_host(name, host_key)

    def _write_known_host(self, name: str, host_key: str) -> None:
        lines = [
            line
            for line in (
                self.known_hosts.read_text().splitlines() if self.known_hosts.exists() else []
            )
            if not line.startswith(name + " ")
        ]
        lines.append(f"{name} {host_key}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def _suspend(self, machine: Machine) -> None:
        """Hibernate: freeze the worker's programs (Jupyter, kernels, watchdog) in place
        and end only the machine's sshd and its sessions."""
        frozen = sshd.with_descendants(processes.agent_pids(machine.root))
        _signal(frozen, signal.SIGSTOP)
        frozen = sshd.with_descendants(frozen)  # anything forked in the meantime
        _signal(frozen, signal.SIGSTOP)
        rest = sshd.instance_pids(f"{INSTANCE_ENV}={machine.instance_id}")
        if machine.sshd is not None:
            rest.append(machine.sshd.pid)
        sshd.end_pids([p for p in sshd.with_descendants(rest) if p not in frozen])
        if machine.sshd is not None:
            machine.sshd.wait(timeout=10)
        self.suspended[machine.instance_id] = frozen
        log.info("hibernated %s (%d processes suspended)", machine.instance_id, len(frozen))

    def _halt(self, machine: Machine) -> None:
        pids = processes.machine_pids(machine.root, machine.instance_id)
        if machine.sshd is not None and machine.sshd.pid not in pids:
            pids = sshd.with_descendants([*pids, machine.sshd.pid])
        sshd.end_pids(pids)
        if machine.sshd is not None:
            machine.sshd.wait(timeout=10)
        unmount_instance(machine.root)  # a stopped machine holds no mount of this one
        log.info("halted %s (%d processes ended)", machine.instance_id, len(pids))


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
