"""InstanceSpawner: one EC2 instance per user, started on login, stopped when idle.

The spawner is a thin state machine over `ec2`, `fleet` and `remote`. Blocking
calls run in the shared executor; `poll()` reads the shared fleet cache only.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from jupyterhub.spawner import Spawner
from traitlets import Bool, Float, Integer, List, TraitError, Unicode, default, validate

from . import hibernation, metrics, remote, usage
from .aws.client import STOPPED_STATES, UP_STATES, CloudError, Instance
from .aws.hub import HubEc2, WorkerSpec, launch_token
from .config import ConfigError, ServerConfig, load_server_config, server_config_path
from .executor import blocking
from .fleet import Fleet
from .install_paths import INSTALL_BIN
from .tags import posix_username

HOME_DEVICE = "/dev/sdf"
# What cloudjhub-worker may spend besides Jupyter's own start: waiting for the
# home volume's device (60 s), creating the account, formatting the volume.
AGENT_OVERHEAD = 180.0
IDEMPOTENCY_CONFLICTS = ("IdempotentInstanceTerminated", "IdempotentParameterMismatch")


_server_configs: dict[str, ServerConfig] = {}


def _cached_server_config(path: str) -> ServerConfig:
    """Read once per hub process, not once per spawner: the file only changes
    with a relaunch, which restarts the hub."""
    if path not in _server_configs:
        _server_configs[path] = load_server_config(path)
    return _server_configs[path]


def stop_reason(last_activity: datetime | None, idle_timeout: int, now: datetime) -> str:
    """Why the hub stops a server: JupyterHub's stop() carries no reason, so infer it.

    The idle culler only deletes servers idle for at least the idle timeout, so such
    a stop is 'idle'; anything else (the user, an admin) is 'request'. An admin who
    stops a server that idle is counted as idle, which is what it was.
    """
    if last_activity is None or idle_timeout <= 0:
        return "request"
    if last_activity.tzinfo is None:  # JupyterHub stores naive UTC
        last_activity = last_activity.replace(tzinfo=UTC)
    idle = (now - last_activity).total_seconds()
    return "idle" if idle >= idle_timeout else "request"


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
        help="Launch hibernation-capable workers (encrypted root volume with room for "
        "the RAM) and hibernate them instead of stopping, so running kernels survive a "
        "stop (server_config HIBERNATE). Needs a worker_instance_type that can hibernate.",
    ).tag(config=True)
    self_stop_grace = Integer(
        help="Seconds, on top of idle_timeout, after which a worker stops its own instance "
        "when its server is unused or the hub does not answer; so idle instances stop even "
        "when the hub is down. Default: max(300, idle_timeout / 2). No self-stop when "
        "idle_timeout is 0.",
    ).tag(config=True)

    @default("self_stop_grace")
    def _default_self_stop_grace(self) -> int:
        return max(300, self.idle_timeout // 2)

    @validate("hibernate", "worker_instance_type")
    def _check_hibernation(self, proposal: Any) -> Any:
        """Reject a type that cannot hibernate as soon as both values are known.

        Values defaulted from server_config.json were checked together when it loaded;
        _spec() checks again before any launch.
        """
        values = {**self._trait_values, proposal["trait"].name: proposal["value"]}
        if values.get("hibernate") and "worker_instance_type" in values:
            reason = hibernation.unsupported_reason(values["worker_instance_type"])
            if reason:
                raise TraitError(f"worker_instance_type (WORKER_INSTANCE_TYPE): {reason}")
        return proposal["value"]

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
        "hibernate": "HIBERNATE",
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
        ["sudo", "-n", f"{INSTALL_BIN}/cloudjhub-worker"],
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

    usage_log = Unicode(
        usage.USAGE_LOG,
        help="File to which one JSON line is appended per instance start and stop, for "
        "`cloudjhub cost`; empty for none. A failed write is logged, never fatal.",
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
        self._stop_requested = False
        self._stop_recorded: str | None = None
        self._connect_started = 0.0

    @property
    def server_config(self) -> ServerConfig:
        if self._server_config is None:
            try:
                self._server_config = _cached_server_config(self.server_config_file)
            except ConfigError as exc:
                raise SpawnError(f"cloudjhub is misconfigured: {exc}") from exc
        return self._server_config

    @property
    def fleet(self) -> Fleet:
        key = (self.cluster_name, self.region, self.aws_endpoint_url or "")
        return Fleet.shared(
            key,
            lambda: HubEc2.connect(self.cluster_name, self.region, self.aws_endpoint_url),
            self.fleet_refresh_interval,
        )

    @property
    def ec2(self) -> HubEc2:
        return self.fleet.ec2

    @property
    def system_user(self) -> str:
        return posix_username(self.user.name)

    # ---- state -------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        # The instance, its host keys and its home volume outlive one server, so
        # clear_state (the base one) keeps them: the next login resumes the instance.
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

    # ---- progress ----------------------------------------------------------

    def _emit(self, percent: int, message: str) -> None:
        last = self._events[-1]["progress"] if self._events else 0
        self._events.append({"progress": max(last, percent), "message": message})
        self.log.info("%s: %s", self._log_name, message)
        self._wake_progress()

    def _wake_progress(self) -> None:
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
        self._stop_requested, self._stop_recorded = False, None
        lock = self._user_locks.setdefault((self.cluster_name, self.user.name), asyncio.Lock())
        try:
            async with lock:
                url = await self._start()
            self._emit(100, "Your server is ready")
            return url
        except (CloudError, remote.RemoteError) as exc:
            raise SpawnError(str(exc)) from exc
        finally:
            self._starting = False
            self._progress_done = True
            self._wake_progress()

    async def _start(self) -> str:
        started = time.monotonic()
        instance = await self._find_instance()
        if instance is None or instance.gone:
            if instance is not None:
                self.log.warning("%s: instance %s was terminated", self._log_name, instance.id)
            instance = await self._launch(previous=instance.id if instance else None)
            await self._record("start", instance.id, instance.instance_type, "launch")
        elif instance.state in STOPPED_STATES:
            if instance.state == "stopping":
                self._emit(5, "Waiting for your instance to finish stopping")
                instance = await self._wait_for(instance.id, ("stopped",))
            self._emit(10, "Starting your stopped instance")
            with metrics.spawn_phase("start"):
                await blocking(self.ec2.start, instance.id)
            await self._record("start", instance.id, instance.instance_type, "resume")
        else:  # already pending or running; the usage report ignores a repeated start
            await self._record("start", instance.id, instance.instance_type, "running")
        self.instance_id = instance.id
        self._emit(20, "Waiting for the instance to boot")
        with metrics.spawn_phase("boot"):
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
            if found and found[0].user == self.user.name and found[0].live:
                self.fleet.remember(found[0])
                return found[0]
        mine = await blocking(self.ec2.describe_workers, self.user.name)
        for inst in mine:
            self.fleet.remember(inst)
        live = [i for i in mine if i.live]
        if live:
            return self.fleet.for_user(self.user.name)
        # All terminated: the newest one is what a replacement replaces.
        return max(mine, key=lambda i: i.launched_at) if mine else None

    def _spec(self) -> WorkerSpec:
        size = self.worker_ebs_size
        if self.hibernate:
            reason = hibernation.unsupported_reason(self.worker_instance_type)
            if reason:
                raise SpawnError(f"cloudjhub is misconfigured: WORKER_INSTANCE_TYPE {reason}")
            # The RAM image goes on the root volume, on top of WORKER_EBS_SIZE.
            size = hibernation.root_volume_gib(self.worker_instance_type, size)
        return WorkerSpec(
            image_id=self.worker_ami,
            instance_type=self.worker_instance_type,
            subnet_id=self.subnet_id,
            security_group_ids=tuple(self.security_group_ids),
            key_name=self.key_name,
            ebs_size=size,
            hibernate=self.hibernate,
        )

    async def _launch(self, previous: str | None) -> Instance:
        self._emit(10, f"Launching your instance ({self.worker_instance_type})")
        token = launch_token(self.cluster_name, self.user.name, previous)
        spec = self._spec()
        with metrics.spawn_phase("launch"):
            try:
                instance = await blocking(self.ec2.launch_worker, self.user.name, spec, token)
            except CloudError as exc:
                if exc.code not in IDEMPOTENCY_CONFLICTS:
                    raise
                # The token names a launch AWS remembers (its instance is gone, or the
                # old id was lost with the hub's state): this is a new request.
                token = launch_token(self.cluster_name, self.user.name, secrets.token_hex(8))
                instance = await blocking(self.ec2.launch_worker, self.user.name, spec, token)
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
            if inst is not None and inst.gone:
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
            self._connect_started = time.monotonic()
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
        """Run `cloudjhub-worker start`, retrying while SSH is not up yet (it boots)."""
        assert instance.private_ip
        ip = instance.private_ip
        self.ip, self.port = ip, self.notebook_port
        request = {
            "user": self.system_user,
            "ip": ip,
            "port": self.port,
            "env": self.get_env(),
            "cmd": [*self.cmd, *self.get_args()],
            "home_volume": home,
            "timeout": self.jupyter_start_timeout,
            "idle_timeout": self.idle_timeout,
            "self_stop_grace": self.self_stop_grace,
            # A hibernated instance still runs its server: keep it (and its kernels).
            "resume": self.hibernate,
        }
        target = remote.Target(ip, self.ssh_port, self.ssh_username, self.ssh_key_file, tuple(keys))
        deadline = time.monotonic() + self.hang_grace
        while True:
            try:
                if not await blocking(remote.tcp_open, ip, self.ssh_port):
                    raise remote.Unreachable(f"nothing answers on {ip}:{self.ssh_port}")
                self._emit(60, "Starting Jupyter")
                jupyter_started = time.monotonic()
                result = await blocking(
                    remote.run_on,
                    target,
                    [*self.worker_command, "start"],
                    json.dumps(request).encode(),
                    self.jupyter_start_timeout + AGENT_OVERHEAD,
                )
                break
            except remote.Unreachable:
                # A machine that is booting (or going down) refuses or drops SSH;
                # `start` is idempotent, so try again. Host key and login errors
                # are not retried: no reboot fixes them.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(self.ssh_retry_interval)
        if result.status != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-3000:]
            raise SpawnError(f"Jupyter failed to start on your instance {instance.id}:\n{detail}")
        metrics.observe_phase("connect", jupyter_started - self._connect_started)
        metrics.observe_phase("jupyter", time.monotonic() - jupyter_started)
        self._adopt_resumed_server(result.stdout)
        self._emit(90, "Jupyter is up; connecting you")
        return f"http://{ip}:{self.port}"

    def _adopt_resumed_server(self, stdout: str) -> None:
        """A server that survived a hibernation keeps the API token it was started with.

        It cannot take the token JupyterHub made for this spawn, so we hand JupyterHub
        the old one instead: it kept it (will_resume), checks it belongs to this user,
        discards the new one and re-keys the OAuth client with it.
        """
        try:
            answer = json.loads(stdout)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        token = answer.get("api_token")
        if answer.get("resumed") is True and isinstance(token, str) and token:
            self.api_token = token
            self._emit(85, "Your hibernated server resumed, with your kernels")

    # ---- stop and poll -----------------------------------------------------

    async def stop(self, now: bool = False) -> None:
        """Stop (never terminate) the instance, so the user's files survive."""
        if not self.instance_id:
            return
        inst = self.fleet.get(self.instance_id)
        if inst is not None and (inst.gone or inst.state in STOPPED_STATES):
            await self._stopped_by_itself(inst)
            return
        if inst is None:
            found = await blocking(self.ec2.describe, [self.instance_id])
            if not found or found[0].gone:
                return  # nothing left to stop
        self._stop_requested = True
        try:
            await self._stop_instance()
        except CloudError as exc:
            if exc.code != "IncorrectInstanceState":
                raise
        else:
            last_activity = getattr(self.orm_spawner, "last_activity", None)
            reason = stop_reason(last_activity, self.idle_timeout, datetime.now(UTC))
            metrics.SERVER_STOPS.labels(reason).inc()
            instance_type = inst.instance_type if inst else self.worker_instance_type
            await self._record("stop", self.instance_id, instance_type, reason)
            self._stop_recorded = self.instance_id
        found = await blocking(self.ec2.describe, [self.instance_id])
        for i in found:
            self.fleet.remember(i)

    async def _stop_instance(self) -> None:
        try:
            await blocking(self.ec2.stop, self.instance_id, self.hibernate)
        except CloudError as exc:
            if not (self.hibernate and exc.code == "UnsupportedHibernationConfiguration"):
                raise
            # Launched before HIBERNATE was turned on: it can only stop plainly.
            self.log.warning(
                "%s: %s cannot hibernate; stopping it", self._log_name, self.instance_id
            )
            await blocking(self.ec2.stop, self.instance_id, False)

    async def poll(self) -> int | None:
        """Cheap: the shared fleet cache only, never SSH or a per-user EC2 call."""
        if self._starting:
            return None
        if not self.instance_id:
            return 0
        try:
            await self.fleet.refresh()
        except CloudError as exc:
            # JupyterHub takes a failed poll as "not running" and forgets the
            # server; a passing EC2 error must not do that to running servers.
            self.log.warning("%s: cannot poll EC2 (%s); assuming unchanged", self._log_name, exc)
            known = self.fleet.get(self.instance_id)
            return 0 if known is not None and known.state not in UP_STATES else None
        inst = self.fleet.get(self.instance_id)
        if inst is not None and inst.state in UP_STATES:
            return None
        if not self._stop_requested and self.server is not None:
            await self._stopped_by_itself(inst)
        return 0

    async def _stopped_by_itself(self, inst: Instance | None) -> None:
        """A server's instance stopped (or vanished) without the hub asking: count it once."""
        assert self.instance_id
        if self._stop_recorded == self.instance_id:
            return
        self._stop_recorded = self.instance_id
        metrics.SELF_STOPS.inc()
        gone = inst is None or inst.gone
        self.log.warning(
            "%s: instance %s %s without the hub asking",
            self._log_name,
            self.instance_id,
            "vanished" if gone else "stopped",
        )
        instance_type = inst.instance_type if inst else self.worker_instance_type
        await self._record(
            "stop", self.instance_id, instance_type, "terminated" if gone else "self"
        )

    async def _record(
        self, event: Literal["start", "stop"], instance_id: str, instance_type: str, reason: str
    ) -> None:
        """Append to the usage log for `cloudjhub cost`; a failed write never fails a spawn."""
        if not self.usage_log:
            return
        entry = usage.UsageEvent(
            t=time.time(),
            event=event,
            user=self.user.name,
            instance_id=instance_id,
            instance_type=instance_type,
            reason=reason,
            cluster=self.cluster_name,
        )
        try:
            await blocking(usage.append_event, self.usage_log, entry)
        except OSError as exc:
            self.log.warning(
                "%s: cannot append to the usage log %s: %s", self._log_name, self.usage_log, exc
            )
