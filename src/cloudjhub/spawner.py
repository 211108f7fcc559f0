"""InstanceSpawner: one EC2 instance per user (and per named server), started on
login, stopped when idle.

The spawner is a thin state machine over `aws`, `fleet` and `remote`. Blocking
calls run in the shared executor; `poll()` reads the shared fleet cache only.
Its options (`spawner_options`), its EC2 calls through the hub's queue and the
launch's capacity fallback (`spawner_ec2`), its progress events (`spawn_progress`), home
volumes (`home_volumes`), the host-key store (`host_keys`), the warm pool
(`warm_pool`), the user's stable id (`user_identity`), the log tails it keeps
(`spawner_logs`) and named servers (`named_servers`) live beside it. What is
left, about 700 lines, is one spawn's path (find or claim, launch or start,
wait, attach, pin host keys, start Jupyter) and stop/poll: kept together because
that path reads best in one place.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import default

from . import (
    hibernation,
    home_usage,
    metrics,
    named_servers,
    remote,
    usage,
    user_identity,
    warm_pool,
)
from .aws.client import STOPPED_STATES, UP_STATES, CloudError, Instance
from .aws.hub import HubEc2, WorkerSpec, launch_token
from .config import ConfigError
from .executor import blocking
from .fleet import Fleet
from .hibernation_prep import HibernationPrep
from .home_volumes import attach_home_volume
from .host_keys import HostKeyStore
from .pool_claims import Claimant, PoolClaims
from .pool_giveback import GiveBacks
from .profile_spawner import ProfileSpawnerMixin
from .release_spawner import ReleaseSpawnerMixin
from .shared_spawner import SharedFolderMixin
from .spawn_progress import SpawnProgress
from .spawner_ec2 import Ec2Calls
from .spawner_logs import KeptLogTails
from .spawner_options import SpawnError
from .tags import POOL_TAG, belongs_to, needs_binding
from .worker.protocol import (
    HomeVolume,
    ProtocolError,
    RestoredFolder,
    StartReply,
    StartRequest,
    posix_username,
)

# What cloudjhub-worker may spend besides Jupyter's own start: waiting for the
# home volume's device (60 s), creating the account, formatting the volume.
AGENT_OVERHEAD = 180.0
IDEMPOTENCY_CONFLICTS = ("IdempotentInstanceTerminated", "IdempotentParameterMismatch")


class InstanceSpawner(
    SharedFolderMixin,
    ReleaseSpawnerMixin,
    Ec2Calls,
    KeptLogTails,
    HibernationPrep,
    ProfileSpawnerMixin,
    Spawner,
):
    """Give each user their own EC2 instance; stop (never terminate) it when they leave."""

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

    _user_locks: ClassVar[dict[tuple[str, str, str], asyncio.Lock]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.instance_id: str | None = None
        self.pinned_host_keys: list[str] = []
        self.pinned_for: str | None = None
        self.home_volume_id: str | None = None
        self._restored_folder: RestoredFolder | None = None
        self._starting = False
        self._progress = SpawnProgress(lambda m: self.log.info("%s: %s", self._log_name, m))
        self._stop_requested = False
        self._stop_recorded: str | None = None
        self._connect_started = 0.0
        # The pool worker this spawner claimed, which the keeper may have just stopped.
        self._just_claimed: str | None = None

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
    def server_name(self) -> str:
        """This spawner's named server ("" the default), checked: it comes from users."""
        return named_servers.checked_server_name(self.name)

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
        state.update(self.profile_state())
        state.update(self.failure_state())
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.instance_id = state.get("instance_id")
        pinned = state.get("host_keys") or {}
        self.pinned_for = pinned.get("instance_id")
        self.pinned_host_keys = list(pinned.get("keys", []))
        self.home_volume_id = state.get("home_volume_id")
        self.load_profile_state(state)
        self.load_failure_state(state)

    # ---- progress ----------------------------------------------------------

    def _emit(self, percent: int, message: str) -> None:
        self._progress.emit(percent, message)

    def _unexpected(self, exc: Exception) -> str:
        """One line naming what failed, where the spawn was, and who can help."""
        events = self._progress.events
        step = f" at '{events[-1]['message']}'" if events else ""
        where = f" (instance {self.instance_id})" if self.instance_id else ""
        detail = " ".join(str(exc).split())[:200]
        what = type(exc).__name__ + (f": {detail}" if detail else "")
        return (
            f"Your server failed to start{step}{where}: unexpected {what}. "
            "Tell your admin; the hub's log has the details."
        )

    async def progress(self) -> Any:
        async for event in self._progress.stream():
            yield event

    # ---- start -------------------------------------------------------------

    async def start(self) -> str:
        # Bad user_options: an HTTP 400 before any EC2 call.
        await self.apply_profile(self.user_options)
        self.current_tags = self.launch_tags(self.user.name, self.name)
        self._progress.restart()
        if self.profile_notice:  # a kept pick no longer offered
            self._emit(1, self.profile_notice)
        self._starting = True
        self._stop_requested, self._stop_recorded = False, None
        key = (self.cluster_name, self.user.name, self.name)
        lock = self._user_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                url = await self._start()
            self._forget_failed_spawn()
            self._emit(100, "Your server is ready")
            return url
        except SpawnError as exc:
            await self._keep_failed_spawn(exc.jupyterhub_message)
            raise
        except (CloudError, remote.RemoteError) as exc:
            await self._keep_failed_spawn(str(exc))
            raise SpawnError(str(exc)) from exc
        except Exception as exc:
            # A bug or a surprise: the user gets a sentence, the admin the traceback.
            self.log.exception("%s: spawn failed unexpectedly", self._log_name)
            await self._keep_failed_spawn(self._unexpected(exc))
            raise SpawnError(self._unexpected(exc)) from exc
        finally:
            self._starting = False
            self._progress.finish()

    async def _start(self) -> str:
        started = time.monotonic()
        instance = await self._find_instance()
        if instance is None or instance.gone:
            if instance is not None:
                self.log.warning("%s: instance %s was terminated", self._log_name, instance.id)
            self.tell_if_reclaimed(instance)
            instance = await self._launch(previous=instance.id if instance else None)
            await self._record("start", instance.id, instance.instance_type, "launch")
        elif instance.state in STOPPED_STATES:
            if instance.state == "stopping":
                self._emit(5, "Waiting for your instance to finish stopping")
                instance = await self._wait_for(instance.id, ("stopped",))
            if await self.fit_to_profile(instance):  # replaced, as the user confirmed
                return await self._start()
            self._emit(10, "Starting your stopped instance")
            with metrics.spawn_phase("start"):
                await self._queued_start(instance.id)
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
        """The user's instance: state is a hint, tags (name and id) are the truth."""
        since = GiveBacks.now()  # a pool worker given back meanwhile is not adopted
        # One lookup shared with the spawns asking meanwhile (a storm's 300 logins).
        found = await self.fleet.user_workers(self.user.name, self.server_name)
        known = next((i for i in found if i.id == self.instance_id), None)
        if self.instance_id and known is None:
            # Tag filters can lag a fresh CreateTags ("Eventual consistency in the
            # Amazon EC2 API"): the id the hub recorded is asked by id.
            read = await blocking(self.ec2.describe, [self.instance_id])
            known = next((i for i in read if self._mine(i)), None)
        if (
            known
            and known.live
            and POOL_TAG not in known.tags
            and not GiveBacks.taken(known.id, since)
        ):
            GiveBacks.adopting(known.id)
            self.fleet.remember(known)
            await self._adopt(known)
            return known
        mine = [i for i in await self._settle_pool_marks(found) if not GiveBacks.taken(i.id, since)]
        for inst in mine:
            self.fleet.remember(inst)
        live = [i for i in mine if i.live]
        if live:
            newest = max(live, key=lambda i: (i.state == "running", i.launched_at, i.id))
            GiveBacks.adopting(newest.id)
            await self._adopt(newest)
            return newest
        if not mine:
            return await self._claim_from_pool()
        # All terminated: the newest one is what a replacement replaces.
        return max(mine, key=lambda i: i.launched_at)

    def _mine(self, inst: Instance) -> bool:
        """Tagged to this user's server and not kept from a deleted user of the name."""
        return (
            inst.user == self.user.name
            and inst.server == self.server_name
            and belongs_to(inst.tags)
        )

    async def _settle_pool_marks(self, mine: list[Instance]) -> list[Instance]:
        """Of the user's tagged instances, drop pool workers tagged to them by hand
        (never handed out) and finish a claim a hub restart cut short (theirs)."""
        settled = []
        for inst in mine:
            if warm_pool.handed_out_by_hand(inst):
                self.log.warning(
                    "%s: pool worker %s tagged by hand; ignored", self._log_name, inst.id
                )
            elif warm_pool.is_claim(inst) and inst.live:
                settled.append(await blocking(warm_pool.finish_claim, self.ec2, inst))
            else:
                settled.append(inst)
        return settled

    async def _claim_from_pool(self) -> Instance | None:
        """A first login takes a ready worker from the warm pool, if there is one."""
        pool = (self.warm_pool_size, self.warm_pool_schedule, self.fleet.instances())
        if not self.pool_fits or not warm_pool.may_have_members(*pool):
            return None
        zone = await self._home_zone(self.user.name, self.server_name)
        queue = self.ec2_queue
        claims = PoolClaims.shared(self._fleet_key, self.fleet, queue.window, queue.pacer)
        claimed = await claims.claim(
            Claimant(
                self.user.name,
                self.user_id,
                self.worker_instance_type,
                self.worker_ami,
                self.server_name,
                zone,
                warm_pool.keys_dir_for_claims(
                    self.warm_pool_keys_dir, lambda: self.ssh_host_key_source
                ),
            ),
            self._pool_wait,
        )
        if claimed is not None:
            self._just_claimed = claimed.id
            self.log.info("%s: claimed pool worker %s", self._log_name, claimed.id)
            self._emit(8, "Taking a ready instance from the warm pool")
            # Its console shows host keys only after its first boot, which the keeper saw.
            keys = warm_pool.recorded_host_keys(self.warm_pool_keys_dir, claimed.id)
            self.pinned_host_keys, self.pinned_for = keys, claimed.id if keys else None
            self.fleet.remember(claimed)
        return claimed

    # ---- the user's stable id ----------------------------------------------

    @property
    def user_id(self) -> str:
        return user_identity.user_id_of(self.user)

    async def _adopt(self, instance: Instance) -> None:
        """A worker made before instances carried the user's id becomes this user's."""
        if needs_binding(instance.tags, self.user_id):
            # No id yet (made before ids), or the id before the hub lost its database.
            self.log.info("%s: binding instance %s to this user's id", self._log_name, instance.id)
            await blocking(self.ec2.adopt, instance.id, instance.tags, self.user_id)

    async def delete_forever(self) -> None:
        """JupyterHub deleted the user (every server of theirs: the default's call does
        it all) or removed a named server (its own worker and, if configured, home)."""
        if self.name:
            await named_servers.remove_server(
                self.ec2,
                self.user.name,
                self.server_name,
                delete_home=self.delete_home_on_remove,
                poll=self.state_poll_interval,
                give_up_after=self.boot_timeout,
                log=lambda m: self.log.info("%s: %s", self._log_name, m),
            )
            self.instance_id, self.home_volume_id = None, None
            return
        await user_identity.delete_user_resources(
            self.ec2,
            self.user.name,
            self.user_id,
            delete_homes=self.delete_home_on_user_delete,
            poll=self.state_poll_interval,
            give_up_after=self.boot_timeout,
            log=lambda m: self.log.info("%s: %s", self._log_name, m),
        )
        self.instance_id, self.home_volume_id = None, None
        self.pinned_host_keys, self.pinned_for = [], None

    async def rename(self, old_name: str, new_name: str) -> None:
        """JupyterHub renames a (stopped) named server: its worker and home follow."""
        try:
            await named_servers.rename_server(self.ec2, self.user.name, old_name, new_name)
        except ValueError as exc:
            raise web.HTTPError(400, f"Cannot rename server {old_name!r}: {exc}") from exc

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
            hibernate=self.hibernates,
            market=self.market,
            extra_tags=tuple(self.current_tags.items()),
            instance_profile=self.worker_instance_profile(),
        )

    async def _launch(self, previous: str | None) -> Instance:
        self._emit(10, f"Launching your instance ({self.worker_instance_type})")
        server = self.server_name
        token = launch_token(self.cluster_name, self.user.name, previous, self.user_id, server)
        spec = self._spec()
        with metrics.spawn_phase("launch"):
            try:
                instance = await self.run_worker(self.user.name, self.user_id, spec, token, server)
            except CloudError as exc:
                if exc.code not in IDEMPOTENCY_CONFLICTS:
                    raise
                # The token names a launch AWS remembers (its instance is gone, or the
                # old id was lost with the hub's state): this is a new request.
                token = launch_token(
                    self.cluster_name, self.user.name, secrets.token_hex(8), self.user_id, server
                )
                instance = await self.run_worker(self.user.name, self.user_id, spec, token, server)
        self.instance_id = instance.id
        self.pinned_host_keys, self.pinned_for = [], None
        self.fleet.remember(instance)
        return instance

    async def _wait_for(self, instance_id: str, states: tuple[str, ...]) -> Instance:
        with self.fleet.watching(instance_id):
            return await self._wait_watched(instance_id, states)

    async def _wait_watched(self, instance_id: str, states: tuple[str, ...]) -> Instance:
        deadline, restarted = time.monotonic() + self.boot_timeout, False
        while True:
            await self.fleet.refresh_watched(self.state_poll_interval)
            inst = self.fleet.get(instance_id)
            if (
                inst is not None
                and inst.state in states
                and (inst.state != "running" or inst.private_ip)
            ):
                return inst
            claimed = instance_id == self._just_claimed
            if claimed and warm_pool.stopped_under_claim(inst, states, restarted):
                # The pool's keeper stopped it just before our claim: start it again.
                await blocking(self.ec2.start, instance_id)
                restarted = True
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

    async def _home_volume(self, instance: Instance) -> HomeVolume | None:
        if self.user_home_ebs_size <= 0:
            return None
        home, self._restored_folder = await attach_home_volume(
            self.ec2,
            self.user.name,
            self.user_id,
            self.user_home_ebs_size,
            instance,
            self._emit,
            self.state_poll_interval,
            self.boot_timeout,
            self.current_tags,
            self.server_name,
        )
        self.home_volume_id = home.volume_id
        return home

    @property
    def _store(self) -> HostKeyStore:
        return HostKeyStore(self.host_key_store)

    async def _host_keys(self, instance: Instance) -> list[str]:
        """The instance's pinned host keys: from the store, else learned once and pinned."""
        try:
            keys = await blocking(self._store.keys_for, instance.id)
            if not keys and self.pinned_for == instance.id and self.pinned_host_keys:
                keys = self.pinned_host_keys  # pinned by a hub that kept them in its database
            if not keys:
                keys = await self._learn_host_keys(instance)
            keys = await self._save_pin(instance.id, keys)
        except ConfigError as exc:
            raise SpawnError(
                f"cloudjhub cannot read its host key store: {exc}. Tell your admin."
            ) from exc
        self.pinned_host_keys, self.pinned_for = keys, instance.id
        return keys

    async def _save_pin(self, instance_id: str, keys: list[str]) -> list[str]:
        """Pin in the store (unless pinned there already); prune the pins of instances
        the fleet no longer has. Returns the pin in force."""
        known = self.fleet.instances()
        gone = [i.id for i in known if i.gone]
        listed = {i.id for i in known} if self.fleet.age != float("inf") else None
        try:
            return await blocking(self._store.pin, instance_id, keys, gone, listed)
        except OSError as exc:
            self.log.warning(
                "%s: cannot save the host keys of %s in %s (%s); only the hub's database has them",
                self._log_name,
                instance_id,
                self.host_key_store,
                exc,
            )
            return keys

    async def _learn_host_keys(self, instance: Instance) -> list[str]:
        """Read a new instance's keys from a source we can justify, waiting for them."""
        assert instance.private_ip
        from_file = self.ssh_host_key_source == "known_hosts"
        if from_file and not self.ssh_known_hosts:
            # Waiting for keys to appear in no file at all would only delay the error.
            raise SpawnError(
                "cloudjhub is misconfigured: SSH_HOST_KEY_SOURCE is known_hosts but "
                "SSH_KNOWN_HOSTS names no file. Tell your admin."
            )
        deadline = time.monotonic() + self.host_key_timeout
        waiting = False
        while True:
            if from_file:
                # An admin (or the local cloud) may add the new instance's key a little
                # after it runs: a file without it yet is not a failure.
                keys = await blocking(
                    remote.read_known_hosts,
                    self.ssh_known_hosts,
                    instance.private_ip,
                    self.ssh_port,
                )
            else:
                console = await blocking(
                    self.ec2.console_output, instance.id, instance.instance_type
                )
                keys = remote.parse_console_host_keys(console)
            if keys:
                return keys
            if time.monotonic() > deadline:
                where = (
                    f"in {self.ssh_known_hosts} for {instance.private_ip}"
                    if from_file
                    else "on its console; it may have failed to boot"
                )
                raise SpawnError(
                    f"Your instance {instance.id} has no SSH host key {where} after "
                    f"{self.host_key_timeout:.0f}s. Tell your admin."
                )
            if not waiting:
                waiting = True
                self._emit(42, "Waiting for your instance's SSH host keys")
            await asyncio.sleep(max(self.state_poll_interval, 2.0))

    async def _start_jupyter(self, instance: Instance, home: HomeVolume | None) -> str:
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

    def _start_request(self, ip: str, home: HomeVolume | None) -> StartRequest:
        """What `cloudjhub-worker start` is asked to run, checked as the worker will."""
        try:
            return StartRequest(
                user=self.system_user,
                ip=ip,
                port=self.notebook_port,
                env=self.get_env(),
                cmd=[*self.cmd, *self.get_args()],
                home_volume=home,
                restored_folder=self._restored_folder,
                timeout=self.jupyter_start_timeout,
                idle_timeout=self.idle_timeout,
                self_stop_grace=self.self_stop_grace,
                # A hibernated instance still runs its server: keep it (and its kernels).
                resume=self.hibernate,
                shared=self.shared_folder(self.user),
            )
        except ProtocolError as exc:
            raise SpawnError(f"cloudjhub is misconfigured: {exc.message}") from exc

    async def _run_worker_start(
        self, instance: Instance, keys: list[str], home: HomeVolume | None
    ) -> str:
        """Run `cloudjhub-worker start`, retrying while SSH is not up yet (it boots)."""
        assert instance.private_ip
        ip = instance.private_ip
        self.ip, self.port = ip, self.notebook_port
        request = self._start_request(ip, home)
        target = remote.Target(ip, self.ssh_port, self.ssh_username, self.ssh_key_file, tuple(keys))
        deadline = time.monotonic() + self.hang_grace
        while True:
            try:
                if not await blocking(remote.tcp_open, ip, self.ssh_port):
                    raise remote.Unreachable(f"nothing answers on {ip}:{self.ssh_port}")
                self._emit(60, "Starting Jupyter")
                jupyter_started = time.monotonic()
                staged = await blocking(self.stage_releases, target, list(self.worker_command))
                result = await blocking(
                    remote.run_on,
                    target,
                    [*self.worker_command, "start"],
                    request.model_copy(update={"releases": staged}).to_json(),
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
        if full := home_usage.home_full(result.status, result.stderr):
            raise full
        if result.status != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-3000:]
            raise SpawnError(f"Jupyter failed to start on your instance {instance.id}:\n{detail}")
        metrics.observe_phase("connect", jupyter_started - self._connect_started)
        metrics.observe_phase("jupyter", time.monotonic() - jupyter_started)
        self._adopt_resumed_server(result.stdout)
        await home_usage.report(self.ec2, instance.id, result.stdout, self._emit)
        self._emit(90, "Jupyter is up; connecting you")
        return f"http://{ip}:{self.port}"

    def _adopt_resumed_server(self, stdout: str) -> None:
        """A server that survived a hibernation keeps the API token it was started with.

        It cannot take the token JupyterHub made for this spawn, so we hand JupyterHub
        the old one instead: it kept it (will_resume), checks it belongs to this user,
        discards the new one and re-keys the OAuth client with it.
        """
        try:
            reply = StartReply.parse(stdout)
        except ProtocolError:
            return
        if reply.resumed and reply.api_token:
            self.api_token = reply.api_token
            self._emit(85, "Your hibernated server resumed, with your kernels")

    # ---- stop and poll -----------------------------------------------------

    async def stop(self, now: bool = False) -> None:
        """Stop (never terminate) the instance, so the user's files survive."""
        if not self.instance_id or self.options_refused:
            return
        inst = self.fleet.get(self.instance_id)
        if inst is not None and (inst.gone or inst.state in STOPPED_STATES):
            await self._stopped_by_itself(inst)
            return
        if inst is None:
            found = await blocking(self.ec2.describe, [self.instance_id])
            if not found or found[0].gone:
                return  # nothing left to stop
            inst = found[0]
        self._stop_requested = True
        await self._keep_stop_tail(inst)
        await self._before_hibernation(inst)
        try:
            await self._stop_instance()
        except CloudError as exc:
            if exc.code != "IncorrectInstanceState":
                raise
        else:
            last_activity = getattr(self.orm_spawner, "last_activity", None)
            reason = metrics.stop_reason(last_activity, self.idle_timeout, datetime.now(UTC))
            metrics.SERVER_STOPS.labels(reason).inc()
            instance_type = inst.instance_type if inst else self.worker_instance_type
            await self._record("stop", self.instance_id, instance_type, reason)
            self._stop_recorded = self.instance_id
        found = await blocking(self.ec2.describe, [self.instance_id])
        for i in found:
            self.fleet.remember(i)

    async def _stop_instance(self) -> None:
        assert self.instance_id
        if await self.end_if_spot(self.instance_id):
            return
        try:
            await self._queued_stop(self.instance_id, self.hibernate)
        except CloudError as exc:
            if not (self.hibernate and exc.code == "UnsupportedHibernationConfiguration"):
                raise
            # Launched before HIBERNATE was turned on: it can only stop plainly.
            self.log.warning(
                "%s: %s cannot hibernate; stopping it", self._log_name, self.instance_id
            )
            await self._queued_stop(self.instance_id, False)

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
            server=self.name,
            instance_id=instance_id,
            instance_type=instance_type,
            reason=reason,
            cluster=self.cluster_name,
            tags=self.current_tags,
        )
        try:
            await blocking(usage.append_event, self.usage_log, entry)
        except OSError as exc:
            self.log.warning(
                "%s: cannot append to the usage log %s: %s", self._log_name, self.usage_log, exc
            )
