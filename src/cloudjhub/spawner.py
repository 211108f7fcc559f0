"""InstanceSpawner: one EC2 instance per user, started on login, stopped when idle.

The spawner is a thin state machine over `ec2`, `fleet` and `remote`. Blocking
calls run in the shared executor; `poll()` reads the shared fleet cache only.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

from jupyterhub.spawner import Spawner
from traitlets import Bool, Float, Integer, List, Unicode, default

from . import remote
from .config import ConfigError, ServerConfig, load_server_config, server_config_path
from .ec2 import CloudError, Ec2, Instance, WorkerSpec, launch_token
from .executor import blocking
from .fleet import Fleet
from .tags import posix_username

HOME_DEVICE = "/dev/sdf"
GONE_STATES = ("shutting-down", "terminated")


class SpawnError(Exception):
    """A spawn failed; the message is shown to the user on the spawn page."""


def _from_file(key: str) -> Any:
    """A trait default read from server_config.json."""

    def getter(self: InstanceSpawner) -> Any:
        return getattr(self.server_config, key)

    return getter


class InstanceSpawner(Spawner):
    """Give each user their own EC2 instance; stop (never terminate) it when they leave."""

    # ---- where the cluster facts come from ---------------------------------

    server_config_file = Unicode(
        help="Path of server_config.json, written by the launcher. Every option below "
        "defaults to the matching key there. Defaults to $CLOUDJHUB_SERVER_CONFIG or "
        "./server_config.json.",
    ).tag(config=True)

    @default("server_config_file")
    def _default_server_config_file(self) -> str:
        return str(server_config_path())

    cluster_name = Unicode(help="Cluster name; only instances tagged with it are used.").tag(
        config=True
    )
    region = Unicode(help="AWS region of the cluster (server_config REGION).").tag(config=True)
    aws_endpoint_url = Unicode(
        None,
        allow_none=True,
        help="EC2 endpoint URL; None uses the standard boto3 chain (AWS_ENDPOINT_URL, ...).",
    ).tag(config=True)
    worker_ami = Unicode(help="AMI of worker instances (server_config WORKER_AMI).").tag(
        config=True
    )
    subnet_id = Unicode(help="Private subnet for workers (server_config SUBNET_ID).").tag(
        config=True
    )
    security_group_ids = List(
        Unicode(), help="Security groups of workers (server_config WORKER_SECURITY_GROUPS)."
    ).tag(config=True)
    key_name = Unicode(help="EC2 key pair of workers (server_config KEY_NAME).").tag(config=True)
    worker_instance_type = Unicode(
        help="Instance type of workers (server_config WORKER_INSTANCE_TYPE)."
    ).tag(config=True)
    worker_ebs_size = Integer(help="Root volume size of workers in GB, at least 8.").tag(
        config=True
    )
    user_home_ebs_size = Integer(
        help="Size in GB of a separate, persistent /home/<user> volume; 0 for none."
    ).tag(config=True)
    idle_timeout = Integer(
        help="Seconds of inactivity after which the culler stops a server "
        "(server_config JUPYTER_NOTEBOOK_TIMEOUT); sets how often servers report activity.",
    ).tag(config=True)
    hibernate = Bool(
        False, help="Launch hibernation-capable workers and hibernate instead of stopping."
    ).tag(config=True)

    for _trait, _key in {
        "cluster_name": "CLUSTER_NAME",
        "region": "REGION",
        "aws_endpoint_url": "AWS_ENDPOINT_URL",
        "worker_ami": "WORKER_AMI",
        "subnet_id": "SUBNET_ID",
        "security_group_ids": "WORKER_SECURITY_GROUPS",
        "key_name": "KEY_NAME",
        "worker_instance_type": "WORKER_INSTANCE_TYPE",
        "worker_ebs_size": "WORKER_EBS_SIZE",
        "user_home_ebs_size": "USER_HOME_EBS_SIZE",
        "idle_timeout": "JUPYTER_NOTEBOOK_TIMEOUT",
    }.items():
        locals()[f"_default_{_trait}"] = default(_trait)(_from_file(_key))
    del _trait, _key

    # ---- SSH ---------------------------------------------------------------

    ssh_username = Unicode(help="Login user on worker images (server_config WORKER_USERNAME).").tag(
        config=True
    )
    ssh_key_file = Unicode(help="Private key matching key_name (server_config SSH_KEY_FILE).").tag(
        config=True
    )
    ssh_port = Integer(help="SSH port of workers (server_config SSH_PORT).").tag(config=True)
    ssh_host_key_source = Unicode(
        help="Where new workers' host keys are learned: 'console' (what cloud-init prints to "
        "the EC2 console) or 'known_hosts' (the file ssh_known_hosts, kept by the admin).",
    ).tag(config=True)
    ssh_known_hosts = Unicode(help="known_hosts file for ssh_host_key_source='known_hosts'.").tag(
        config=True
    )
    for _trait, _key in {
        "ssh_username": "WORKER_USERNAME",
        "ssh_key_file": "SSH_KEY_FILE",
        "ssh_port": "SSH_PORT",
        "ssh_host_key_source": "SSH_HOST_KEY_SOURCE",
        "ssh_known_hosts": "SSH_KNOWN_HOSTS",
    }.items():
        locals()[f"_default_{_trait}"] = default(_trait)(_from_file(_key))
    del _trait, _key

    worker_command = List(
        Unicode(),
        ["sudo", "-n", "/opt/cloudjhub/venv/bin/cloudjhub-worker"],
        help="Command prefix that runs cloudjhub-worker on an instance.",
    ).tag(config=True)
    notebook_port = Integer(
        8888, help="Port jupyterhub-singleuser listens on, on the instance."
    ).tag(config=True)

    # ---- timing ------------------------------------------------------------

    fleet_refresh_interval = Float(
        15.0, help="Seconds between the shared DescribeInstances refreshes used by poll()."
    ).tag(config=True)
    state_poll_interval = Float(
        2.0, help="Seconds between state checks while an instance boots or stops."
    ).tag(config=True)
    boot_timeout = Float(600.0, help="Seconds to wait for an instance to reach 'running'.").tag(
        config=True
    )
    host_key_timeout = Float(
        300.0, help="Seconds to wait for a new instance to publish its SSH host keys."
    ).tag(config=True)
    hang_grace = Float(
        180.0,
        help="Seconds a running instance may refuse SSH before it is stopped and started "
        "once; a second failure fails the spawn.",
    ).tag(config=True)
    ssh_retry_interval = Float(3.0, help="Seconds between SSH attempts while it boots.").tag(
        config=True
    )
    jupyter_start_timeout = Float(
        120.0, help="Seconds cloudjhub-worker waits for Jupyter to listen."
    ).tag(config=True)

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        return 1200

    @default("http_timeout")
    def _default_http_timeout(self) -> int:
        return 120

    @default("env_keep")
    def _default_env_keep(self) -> list[str]:
        # The hub's PATH or virtualenv mean nothing on another machine.
        return ["JUPYTERHUB_SINGLEUSER_APP"]

    @default("will_resume")
    def _default_will_resume(self) -> bool:
        return True

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        # Report activity several times per timeout, so culling is on time
        # (jupyterhub-singleuser's default is every 300 s).
        interval = max(5, min(300, self.idle_timeout // 6))
        env.setdefault("JUPYTERHUB_ACTIVITY_INTERVAL", str(interval))
        return env

    # ---- per-process shared state -----------------------------------------

    _user_locks: ClassVar[dict[tuple[str, str], asyncio.Lock]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.instance_id: str | None = None
        self.pinned_host_keys: list[str] = []
        self.pinned_for: str | None = None
        self.home_volume_id: str | None = None
        self._starting = False
        self._events: list[dict[str, Any]] = []
        self._events_changed = asyncio.Event()
        self._progress_done = False
        self._server_config: ServerConfig | None = None

    @property
    def server_config(self) -> ServerConfig:
        if self._server_config is None:
            try:
                self._server_config = load_server_config(self.server_config_file)
            except ConfigError as exc:
                raise SpawnError(f"cloudjhub is misconfigured: {exc}") from exc
        return self._server_config

    @property
    def fleet(self) -> Fleet:
        key = (self.cluster_name, self.region, self.aws_endpoint_url or "")
        return Fleet.shared(
            key,
            lambda: Ec2.connect(self.cluster_name, self.region, self.aws_endpoint_url),
            self.fleet_refresh_interval,
        )

    @property
    def ec2(self) -> Ec2:
        return self.fleet.ec2

    @property
    def system_user(self) -> str:
        return posix_username(self.user.name)

    # ---- state -------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.instance_id:
            state["instance_id"] = self.instance_id
        if self.pinned_host_keys and self.pinned_for:
            state["host_keys"] = {"instance_id": self.pinned_for, "keys": self.pinned_host_keys}
        if self.home_volume_id:
            state["home_volume_id"] = self.home_volume_id
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.instance_id = state.get("instance_id")
        pinned = state.get("host_keys") or {}
        self.pinned_for = pinned.get("instance_id")
        self.pinned_host_keys = list(pinned.get("keys", []))
        self.home_volume_id = state.get("home_volume_id")

    def clear_state(self) -> None:
        # The instance, its host keys and its home volume outlive one server:
        # keep them, so the next login resumes the same instance.
        super().clear_state()

    # ---- progress ----------------------------------------------------------

    def _emit(self, percent: int, message: str) -> None:
        last = self._events[-1]["progress"] if self._events else 0
        self._events.append({"progress": max(last, percent), "message": message})
        self.log.info("%s: %s", self._log_name, message)
        changed, self._events_changed = self._events_changed, asyncio.Event()
        changed.set()

    async def progress(self) -> Any:
        sent = 0
        while True:
            changed = self._events_changed
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if self._progress_done:
                return
            await changed.wait()

    # ---- start -------------------------------------------------------------

    async def start(self) -> str:
        self._events, self._progress_done, self._starting = [], False, True
        lock = self._user_locks.setdefault((self.cluster_name, self.user.name), asyncio.Lock())
        try:
            async with lock:
                return await self._start()
        except (CloudError, remote.RemoteError) as exc:
            raise SpawnError(str(exc)) from exc
        finally:
            self._starting = False
            self._progress_done = True
            self._emit(100, "Done")

    async def _start(self) -> str:
        started = time.monotonic()
        instance = await self._find_instance()
        if instance is None or instance.state in GONE_STATES:
            if instance is not None:
                self.log.warning("%s: instance %s was terminated", self._log_name, instance.id)
            instance = await self._launch(previous=instance.id if instance else None)
        elif instance.state in ("stopped", "stopping"):
            if instance.state == "stopping":
                self._emit(5, "Waiting for your instance to finish stopping")
                instance = await self._wait_for(instance.id, ("stopped",))
            self._emit(10, "Starting your stopped instance")
            await blocking(self.ec2.start, instance.id)
        self.instance_id = instance.id
        self._emit(20, "Waiting for the instance to boot")
        instance = await self._wait_for(instance.id, ("running",))
        home = await self._home_volume(instance)
        url = await self._start_jupyter(instance, home)
        self.log.info(
            "%s: ready at %s after %.1fs", self._log_name, url, time.monotonic() - started
        )
        return url

    async def _find_instance(self) -> Instance | None:
        """The user's instance: state is a hint, tags are the truth."""
        if self.instance_id:
            found = await blocking(self.ec2.describe, [self.instance_id])
            if found and found[0].user == self.user.name and found[0].state not in GONE_STATES:
                self.fleet.remember(found[0])
                return found[0]
        mine = await blocking(self.ec2.describe_workers, self.user.name)
        for inst in mine:
            self.fleet.remember(inst)
        live = [i for i in mine if i.state not in GONE_STATES]
        if live:
            return self.fleet.for_user(self.user.name)
        return mine[0] if mine else None

    def _spec(self) -> WorkerSpec:
        return WorkerSpec(
            image_id=self.worker_ami,
            instance_type=self.worker_instance_type,
            subnet_id=self.subnet_id,
            security_group_ids=tuple(self.security_group_ids),
            key_name=self.key_name,
            ebs_size=self.worker_ebs_size,
            hibernate=self.hibernate,
        )

    async def _launch(self, previous: str | None) -> Instance:
        self._emit(10, f"Launching your instance ({self.worker_instance_type})")
        token = launch_token(self.cluster_name, self.user.name, previous)
        instance = await blocking(self.ec2.launch_worker, self.user.name, self._spec(), token)
        self.instance_id = instance.id
        self.pinned_host_keys, self.pinned_for = [], None
        self.fleet.remember(instance)
        return instance

    async def _wait_for(self, instance_id: str, states: tuple[str, ...]) -> Instance:
        deadline = time.monotonic() + self.boot_timeout
        while True:
            await self.fleet.refresh(max_age=self.state_poll_interval)
            inst = self.fleet.get(instance_id)
            if (
                inst is not None
                and inst.state in states
                and (inst.state != "running" or inst.private_ip)
            ):
                return inst
            if inst is not None and inst.state in GONE_STATES:
                raise SpawnError(
                    f"Your instance {instance_id} was terminated while starting. "
                    "Start your server again to get a new one."
                )
            if time.monotonic() > deadline:
                state = inst.state if inst else "unknown"
                raise SpawnError(
                    f"Your instance {instance_id} is still '{state}' after "
                    f"{self.boot_timeout:.0f}s. Try again later or tell your admin."
                )
            await asyncio.sleep(self.state_poll_interval)

    async def _home_volume(self, instance: Instance) -> dict[str, str] | None:
        if self.user_home_ebs_size <= 0:
            return None
        volume = await blocking(self.ec2.find_home_volume, self.user.name)
        if volume is None:
            self._emit(25, f"Creating your {self.user_home_ebs_size} GB home volume")
            volume_id = await blocking(
                self.ec2.create_home_volume,
                self.user.name,
                self.user_home_ebs_size,
                instance.availability_zone,
            )
            volume = await self._wait_volume(volume_id, "available")
        attached = [a["InstanceId"] for a in volume.get("Attachments", [])]
        if instance.id not in attached:
            if attached:
                raise SpawnError(
                    f"Your home volume {volume['VolumeId']} is still attached to "
                    f"{attached[0]}. Try again in a minute or tell your admin."
                )
            self._emit(28, "Attaching your home volume")
            await blocking(self.ec2.attach_volume, volume["VolumeId"], instance.id, HOME_DEVICE)
        self.home_volume_id = volume["VolumeId"]
        return {"volume_id": volume["VolumeId"], "device": HOME_DEVICE}

    async def _wait_volume(self, volume_id: str, state: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.boot_timeout
        while True:
            volume = await blocking(self.ec2.find_home_volume, self.user.name)
            if volume and volume["VolumeId"] == volume_id and volume["State"] == state:
                return volume
            if time.monotonic() > deadline:
                raise SpawnError(f"Your home volume {volume_id} did not become {state}.")
            await asyncio.sleep(self.state_poll_interval)

    async def _host_keys(self, instance: Instance) -> list[str]:
        """Pin the instance's host keys once, from a source we can justify."""
        if self.pinned_for == instance.id and self.pinned_host_keys:
            return self.pinned_host_keys
        assert instance.private_ip
        if self.ssh_host_key_source == "known_hosts":
            keys = await blocking(
                remote.read_known_hosts, self.ssh_known_hosts, instance.private_ip, self.ssh_port
            )
            if not keys:
                raise SpawnError(
                    f"No SSH host key for {instance.private_ip} in {self.ssh_known_hosts}."
                )
            return keys
        deadline = time.monotonic() + self.host_key_timeout
        while True:
            console = await blocking(self.ec2.console_output, instance.id)
            keys = remote.parse_console_host_keys(console)
            if keys:
                self.pinned_host_keys, self.pinned_for = keys, instance.id
                return keys
            if time.monotonic() > deadline:
                raise SpawnError(
                    f"Your instance {instance.id} did not publish its SSH host keys on its "
                    "console; it may have failed to boot. Tell your admin."
                )
            await asyncio.sleep(max(self.state_poll_interval, 2.0))

    async def _start_jupyter(self, instance: Instance, home: dict[str, str] | None) -> str:
        """Connect and start Jupyter; stop and start a hung instance once."""
        restarted = False
        while True:
            self._emit(40, "Connecting")
            keys = await self._host_keys(instance)
            try:
                return await self._run_worker_start(instance, keys, home)
            except remote.Unreachable as exc:
                if restarted:
                    raise SpawnError(
                        f"Your instance {instance.id} is running but does not answer SSH, "
                        f"even after a restart ({exc}). Tell your admin."
                    ) from exc
                restarted = True
                self._emit(45, "Your instance is not responding; restarting it once")
                await blocking(self.ec2.stop, instance.id)
                await self._wait_for(instance.id, ("stopped",))
                await blocking(self.ec2.start, instance.id)
                instance = await self._wait_for(instance.id, ("running",))

    async def _run_worker_start(
        self, instance: Instance, keys: list[str], home: dict[str, str] | None
    ) -> str:
        assert instance.private_ip
        ip = instance.private_ip
        deadline = time.monotonic() + self.hang_grace
        while not await blocking(remote.tcp_open, ip, self.ssh_port):
            if time.monotonic() > deadline:
                raise remote.Unreachable(f"nothing answers on {ip}:{self.ssh_port}")
            await asyncio.sleep(self.ssh_retry_interval)
        self.ip, self.port = ip, self.notebook_port
        request = {
            "user": self.system_user,
            "ip": ip,
            "port": self.port,
            "env": self.get_env(),
            "cmd": [*self.cmd, *self.get_args()],
            "home_volume": home,
            "timeout": self.jupyter_start_timeout,
        }
        self._emit(60, "Starting Jupyter")
        result = await blocking(
            remote.run,
            ip,
            self.ssh_port,
            self.ssh_username,
            self.ssh_key_file,
            keys,
            [*self.worker_command, "start"],
            stdin=json.dumps(request).encode(),
            timeout=self.jupyter_start_timeout + 30,
        )
        if result.status != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-3000:]
            raise SpawnError(f"Jupyter failed to start on your instance {instance.id}:\n{detail}")
        self._emit(90, "Jupyter is up; connecting you")
        return f"http://{ip}:{self.port}"

    # ---- stop and poll -----------------------------------------------------

    async def stop(self, now: bool = False) -> None:
        """Stop (never terminate) the instance, so the user's files survive."""
        if not self.instance_id:
            return
        inst = self.fleet.get(self.instance_id)
        if inst is not None and inst.state in ("stopped", "stopping", *GONE_STATES):
            return
        try:
            await blocking(self.ec2.stop, self.instance_id, self.hibernate)
        except CloudError as exc:
            if exc.code != "IncorrectInstanceState":
                raise
        found = await blocking(self.ec2.describe, [self.instance_id])
        for i in found:
            self.fleet.remember(i)

    async def poll(self) -> int | None:
        """Cheap: the shared fleet cache only, never SSH or a per-user EC2 call."""
        if self._starting:
            return None
        if not self.instance_id:
            return 0
        await self.fleet.refresh()
        inst = self.fleet.get(self.instance_id)
        if inst is not None and inst.state in ("pending", "running"):
            return None
        return 0
