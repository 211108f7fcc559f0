"""Cluster bring-up as steps with undo.

Each step reuses what a previous run made (found by tags) and records what
it creates; a failure undoes, newest first, only what this run created, with
teardown's own deletes (`undo.py`).
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..aws.admin import AdminEc2
from ..aws.client import CloudError, Instance
from ..config import ServerConfig, server_config_from, worker_subnets, write_server_config
from ..install_paths import INSTALL_BIN
from ..tags import Group, Role, group_name, image_name, tags_for
from ..waiting import TimedOut, poll_until
from .backup_policy import ensure_backup_policy
from .backup_policy import plan_line as backup_plan_line
from .groups import ClusterGroups, ensure_security_groups
from .image import build_worker_image, find_worker_image, image_has_gpu
from .options import LaunchOptions
from .provision import Node, install_os_packages, sudo_for
from .record import recorded_pins
from .shared_storage import ensure_shared_storage
from .shared_storage import plan_line as shared_plan_line
from .undo import UndoLog

Say = Callable[[str], None]
PREINSTALLED_TAG = "cloudjhub:preinstalled"
NOTEBOOK_PORT = 8888
PROGRESS_EVERY = 10.0  # seconds between "waiting for ..." lines of one wait


class LaunchError(Exception):
    """A launch step failed; what this run created has been undone (or kept)."""


@dataclass
class Created:
    security_groups: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    key_pairs: list[str] = field(default_factory=list)


@dataclass
class LaunchResult:
    hub_url: str
    manager: Instance
    image_id: str
    groups: ClusterGroups
    created: Created
    seconds: float
    callback_url: str = ""  # where the sign-in provider sends browsers back, if any


def plan(ec2: AdminEc2, opts: LaunchOptions) -> list[str]:
    """What a launch would create (or reuse), for --dry-run."""
    c = opts.cluster
    lines = [f"security group {group_name(c, g)}" for g in Group]
    if opts.instance.CUSTOM_WORKER_AMI:
        lines.append(f"worker image: use {opts.instance.CUSTOM_WORKER_AMI} (custom)")
    elif (existing := find_worker_image(ec2)) is not None:
        lines.append(f"worker image: reuse {existing}")
    else:
        lines += [
            f"builder instance ({opts.instance.WORKER_INSTANCE_TYPE}) from {opts.base_ami}, "
            "terminated after imaging",
            f"worker image {image_name(c, '<date>')} and its snapshot"
            + (" (with the NVIDIA driver and CUDA runtime)" if opts.instance.GPU_IMAGE else ""),
        ]
    managers = ec2.cluster_instances(Role.MANAGER)
    if managers:
        lines.append(f"manager instance: reuse {managers[0].id}")
    else:
        lines.append(
            f"manager instance ({opts.instance.MANAGER_INSTANCE_TYPE}) in {opts.public_subnet}"
            + (f" with instance profile {opts.instance_profile}" if opts.instance_profile else "")
        )
    lines += [
        f"key pair {opts.workers_key_name} (public half of a key generated on the manager)",
        f"file {opts.server_config_file}",
        f"file {opts.record_file}",
        *(
            []
            if opts.sign_in.external  # the provider signs the admins in: no password
            else [f"file {opts.admin_password_file} (admin's password, mode 0600)"]
        ),
        *backup_plan_line(opts),
        *shared_plan_line(opts),
    ]
    return lines


class Launch:
    def __init__(self, ec2: AdminEc2, opts: LaunchOptions, say: Say = print) -> None:
        self.ec2 = ec2
        self.opts = opts
        self.say = say
        self.created = Created()
        self._undo = UndoLog(ec2, say, opts.timeout, opts.poll)
        self._preinstalled: str | None = None
        self._file_system_id = ""
        self._workers_profile = ""
        # Whether the worker image has the NVIDIA driver and CUDA (server_config's GPU_IMAGE).
        self._gpu_image = opts.instance.GPU_IMAGE
        self._admin_password = ""
        self._callback_url = ""
        # Host keys pinned by instance id: the last run's record, then this run's pins.
        self.pins: dict[str, tuple[str, ...]] = recorded_pins(opts.record_file, opts.cluster, say)

    # ---- driver ----------------------------------------------------------

    def run(self) -> LaunchResult:
        began = time.monotonic()
        try:
            self._preinstalled = self._preinstalled_bin()
            groups = self.security_groups()
            self.shared_storage(groups)
            image_id = self.worker_image(groups)
            manager = self.manager(groups)
            public_key = self.setup_manager(manager, image_id, groups)
            self.import_workers_key(public_key)
            url = self.wait_for_hub(manager)
            if made := ensure_backup_policy(self.ec2, self.opts, self.say):
                self._undo.add(f"backup policy {made[0]}", made[1])
        except Exception as exc:
            self._fail(exc)
            raise LaunchError(str(exc)) from exc
        result = LaunchResult(
            url,
            manager,
            image_id,
            groups,
            self.created,
            time.monotonic() - began,
            self._callback_url,
        )
        self.write_record(result)
        self.keep_admin_password()
        return result

    def _fail(self, exc: Exception) -> None:
        self.say(f"launch failed: {exc}")
        if self.opts.keep_on_failure:
            self.say("--keep-on-failure: leaving what this run created:")
            self._undo.keep()
            return
        self._undo.roll_back()

    def _wait(self, what: str, done: Callable[[], bool]) -> None:
        try:
            poll_until(
                done,
                timeout=self.opts.timeout,
                interval=self.opts.poll,
                what=what,
                progress=lambda _, elapsed: self.say(f"  waiting for {what} ({elapsed:.0f}s)"),
                progress_every=PROGRESS_EVERY,
            )
        except TimedOut as late:
            raise CloudError(str(late)) from late

    def _preinstalled_bin(self) -> str | None:
        """An image tagged with cloudjhub's bin dir has everything installed already
        (the local cloud's base image): skip OS package installation."""
        image = self.ec2.image(self.opts.base_ami) or {}
        tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        return tags.get(PREINSTALLED_TAG)

    # ---- steps -----------------------------------------------------------

    def security_groups(self) -> ClusterGroups:
        vpc = self.ec2.subnets([self.opts.public_subnet])[self.opts.public_subnet]["VpcId"]
        made: dict[str, str] = {}
        self._undo.add("security groups made by this run", lambda: self._undo.groups(made))
        groups = ensure_security_groups(
            self.ec2,
            vpc,
            admin_cidr=self.opts.admin_cidr,
            notebook_port=NOTEBOOK_PORT,
            ssh_port=self.opts.ssh_port,
            created=made,
            public_ports=self.opts.public_ports,
        )
        self.created.security_groups += list(made)
        self.say(
            f"security groups: manager {groups.manager}, manager2 {groups.manager2}, "
            f"worker {groups.worker}" + (" (created)" if made else " (reused)")
        )
        return groups

    def shared_storage(self, groups: ClusterGroups) -> None:
        vpc = self.ec2.subnets([self.opts.public_subnet])[self.opts.public_subnet]["VpcId"]
        if made := ensure_shared_storage(self.ec2, self.opts, groups, vpc, self.say):
            self._file_system_id, self._workers_profile = made[0], made[1]
            self._undo.add(f"shared folder {made[0]}", made[2])

    def worker_image(self, groups: ClusterGroups) -> str:
        if self.opts.instance.CUSTOM_WORKER_AMI:
            self.say(f"worker image: {self.opts.instance.CUSTOM_WORKER_AMI} (custom)")
            return self.opts.instance.CUSTOM_WORKER_AMI
        existing = find_worker_image(self.ec2)
        if existing:
            self._gpu_image = image_has_gpu(self.ec2, existing)
            if self.opts.instance.GPU_IMAGE and not self._gpu_image:
                raise CloudError(
                    f"--gpu-image: the cluster's worker image {existing} was built without "
                    "the NVIDIA driver; deregister it (and its snapshot) to build a GPU one"
                )
            self.say(f"worker image: {existing} (reused{', GPU' if self._gpu_image else ''})")
            return existing
        made: list[str] = []
        self._undo.add("the worker image made by this run", lambda: self._undo.images(made))
        # The builder fetches packages, so it needs a route out. Reached at a public IP,
        # it sits in the public subnet with one; reached from inside the VPC
        # (--connect-via private), in the private subnet, whose NAT gateway is its way
        # out: in the public subnet without a public IP the internet gateway would not
        # carry its traffic, and with one it would be open to the internet for nothing.
        private = self.opts.connect_via == "private"
        image_id = build_worker_image(
            self.ec2,
            self.opts.base_ami,
            self.opts.instance.WORKER_INSTANCE_TYPE,
            self.opts.private_subnet if private else self.opts.public_subnet,
            [groups.manager],
            self.opts.key_name,
            provision=self._provision_builder,
            progress=lambda m: self.say(f"  {m}"),
            timeout=self.opts.timeout,
            poll=self.opts.poll,
            public_ip=not private,
            on_image=made.append,
            gpu=self.opts.instance.GPU_IMAGE,
        )
        self.created.images.append(image_id)
        return image_id

    def _node(self, instance: Instance, login: str) -> Node:
        # A pin from an earlier run is used as is: cloud-init prints the keys to the
        # console on an instance's first boot only, so a restarted manager has none there.
        return Node(
            instance=instance,
            ec2=self.ec2,
            login=login,
            key_file=str(self.opts.key_file),
            port=self.opts.ssh_port,
            connect_via=self.opts.connect_via,
            known_hosts=self.opts.known_hosts,
            timeout=self.opts.timeout,
            poll=self.opts.poll,
            say=self.say,
            _keys=self.pins.get(instance.id, ()),
        )

    def _provision_builder(self, builder: Instance) -> None:
        node = self._node(builder, self.opts.instance.WORKER_USERNAME)
        node.wait_for_ssh()
        if self._preinstalled:
            self.say("  base image has cloudjhub preinstalled: no OS packages to install")
            return
        hibernate = "1" if self.opts.instance.HIBERNATE else "0"
        gpu = "1" if self.opts.instance.GPU_IMAGE else "0"
        env = {
            "CLOUDJHUB_LOGIN_USER": node.login,
            "CLOUDJHUB_HIBERNATE": hibernate,
            "CLOUDJHUB_GPU": gpu,
        }
        install_os_packages(node, "install-worker.sh", env)

    def manager(self, groups: ClusterGroups) -> Instance:
        running = self.ec2.cluster_instances(Role.MANAGER)
        if running:
            manager = running[0]
            self.say(f"manager instance: {manager.id} (reused, {manager.state})")
            if manager.state == "stopping":
                self._wait(
                    f"manager {manager.id} to finish stopping",
                    lambda: self.ec2.describe([manager.id])[0].state == "stopped",
                )
            if manager.state in ("stopping", "stopped"):
                self.ec2.start(manager.id, roles=(Role.MANAGER,))
        else:
            manager = self.ec2.run_instance(
                self.opts.base_ami,
                self.opts.instance.MANAGER_INSTANCE_TYPE,
                self.opts.public_subnet,
                [groups.manager, groups.manager2],
                self.opts.key_name,
                tags_for(self.opts.cluster, Role.MANAGER),
                instance_profile=self.opts.instance_profile,
                public_ip=True,  # the hub's public face
            )
            self.created.instances.append(manager.id)
            self._undo.add(f"manager instance {manager.id}", lambda: self._undo.manager(manager))
            self.say(f"manager instance: {manager.id} (launched)")
        found: list[Instance] = []

        def running_now() -> bool:
            found[:] = self.ec2.describe([manager.id])
            return bool(found) and found[0].state == "running" and bool(found[0].private_ip)

        self._wait(f"manager {manager.id} to run", running_now)
        return found[0]

    def _server_config(
        self, manager: Instance, image_id: str, groups: ClusterGroups
    ) -> ServerConfig:
        i = self.opts.instance
        return server_config_from(
            {
                "CLUSTER_NAME": self.opts.cluster,
                "REGION": self.opts.region,
                "WORKER_AMI": image_id,
                "SUBNET_ID": self.opts.private_subnet,
                "SUBNET_IDS": worker_subnets(self.opts.private_subnet, i.SUBNET_IDS),
                "WORKER_SECURITY_GROUPS": [groups.worker],
                "KEY_NAME": self.opts.workers_key_name,
                "WORKER_INSTANCE_TYPE": i.WORKER_INSTANCE_TYPE,
                "WORKER_EBS_SIZE": i.WORKER_EBS_SIZE,
                "USER_HOME_EBS_SIZE": i.USER_HOME_EBS_SIZE,
                "JUPYTER_NOTEBOOK_TIMEOUT": i.JUPYTER_NOTEBOOK_TIMEOUT,
                "HIBERNATE": i.HIBERNATE,
                "GPU_IMAGE": self._gpu_image,
                "WARM_POOL_SIZE": i.WARM_POOL_SIZE,
                "WARM_POOL_SCHEDULE": list(i.WARM_POOL_SCHEDULE),
                "WARM_POOL_TIME_ZONE": i.WARM_POOL_TIME_ZONE,
                "EXTRA_TAGS": dict(i.EXTRA_TAGS),
                "MANAGER_IP": manager.private_ip or "",
                "WORKER_USERNAME": i.WORKER_USERNAME,
                "SERVER_OWNER": i.SERVER_OWNER,
                "SSH_PORT": self.opts.ssh_port,
                "AWS_ENDPOINT_URL": self.opts.endpoint_url,
                **self._shared_keys(),
            },
            "launch options",
        )

    def _shared_keys(self) -> dict[str, Any]:
        shared = self.opts.shared
        if shared is None or not self._file_system_id:
            return {}
        return {
            "SHARED_STORAGE": shared.storage,
            "SHARED_FILE_SYSTEM_ID": self._file_system_id,
            "SHARED_COURSE": shared.course,
            "SHARED_DROPBOX": shared.dropbox,
            "SHARED_WORKER_INSTANCE_PROFILE": self._workers_profile,
        }

    @property
    def _bin_dir(self) -> str:
        """Where cloudjhub's commands are on the images this launch uses."""
        return self._preinstalled or INSTALL_BIN

    def _worker_command(self) -> list[str]:
        sudo = sudo_for(self.opts.instance.WORKER_USERNAME)
        return [*sudo, f"{self._bin_dir}/cloudjhub-worker"]

    def setup_manager(self, manager: Instance, image_id: str, groups: ClusterGroups) -> str:
        """OS packages (unless preinstalled), then cloudjhub's own setup; returns the
        workers' public key, generated on the manager."""
        node = self._node(manager, self.opts.instance.SERVER_USERNAME)
        node.wait_for_ssh()
        self.pins[manager.id] = node.target().host_keys
        if not self._preinstalled:
            install_os_packages(node, "install-manager.sh", {})
        config = self._server_config(manager, image_id, groups)
        request: dict[str, Any] = {
            "server_config": config.model_dump(),
            "bind_ip": manager.private_ip,
            "public_port": self.opts.hub_port,
            "worker_command": self._worker_command(),
            # The sign-in, its client secret included: over the SSH channel only.
            "signin": self.opts.sign_in.model_copy(
                update={"public_url": self.opts.sign_in.public_url or self.hub_url(manager)}
            ).model_dump(),
        }
        if self.opts.profiles:
            request["profile_list"] = self.opts.profiles
        if self.opts.ssl_cert and self.opts.ssl_key:
            # Over the SSH channel, like every secret: never a command line or a copy in /tmp.
            request["tls"] = {
                "cert": self.opts.ssl_cert.read_text(),
                "key": self.opts.ssl_key.read_text(),
            }
        self.say(f"  setting up the hub on {manager.id}")
        setup = [
            *node.sudo,
            f"{self._bin_dir}/cloudjhub",
            "setup-manager",
            "--authenticator",
            self.opts.authenticator,
        ]
        result = node.run(setup, json.dumps(request))
        if result.status != 0:
            raise CloudError(
                f"manager setup failed on {manager.id}: {result.stderr.strip()[-2000:]}"
            )
        reply: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        self._admin_password = str(reply.get("admin_password") or "")
        self._callback_url = str(reply.get("callback_url") or "")
        return str(reply["worker_public_key"])

    def keep_admin_password(self) -> None:
        """The admin's sign-in, for the person launching only: a file of mode 0600.
        With a provider's sign-in there is none; a file from an earlier launch goes."""
        password = self._admin_password
        path = self.opts.admin_password_file
        if not password:
            if path.exists():
                path.unlink()
                self.say(f"file {path}: removed (sign-in is {self.opts.authenticator}'s)")
            return
        self.opts.output_dir.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")

    def import_workers_key(self, public_key: str) -> None:
        name = self.opts.workers_key_name
        if self.ec2.key_pair(name) is not None:
            self.say(f"key pair {name}: exists (reused)")
            return
        self.ec2.import_key_pair(
            name, public_key, tags_for(self.opts.cluster, Role.MANAGER, name=name)
        )
        self.created.key_pairs.append(name)
        self._undo.add(f"key pair {name}", lambda: self._undo.key_pair(name))
        self.say(f"key pair {name}: imported")

    def hub_url(self, manager: Instance) -> str:
        host = manager.private_ip if self.opts.connect_via == "private" else manager.public_ip
        if not host:
            raise CloudError(f"manager {manager.id} has no {self.opts.connect_via} IP address")
        scheme = "https" if self.opts.tls else "http"
        default = 443 if self.opts.tls else 80
        port = "" if self.opts.hub_port == default else f":{self.opts.hub_port}"
        return f"{scheme}://{host}{port}/"

    def wait_for_hub(self, manager: Instance) -> str:
        url = self.hub_url(manager)
        context = (
            ssl.create_default_context(cafile=str(self.opts.ssl_cert)) if self.opts.tls else None
        )
        if context is not None:
            # The certificate names the public DNS name; here we reach an IP.
            context.check_hostname = False

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(  # noqa: S310 - the manager's URL we built
                    f"{url}hub/health", timeout=5, context=context
                ) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        self._wait(f"the hub to answer {url}hub/health", healthy)
        return url

    # ---- outputs -----------------------------------------------------------

    def write_record(self, result: LaunchResult) -> None:
        config = self._server_config(result.manager, result.image_id, result.groups)
        remote_config = config.model_copy(update={"SSH_KEY_FILE": "/etc/cloudjhub/worker_key"})
        self.opts.output_dir.mkdir(parents=True, exist_ok=True)
        write_server_config(remote_config, self.opts.server_config_file)
        record = {
            "cluster": self.opts.cluster,
            "region": self.opts.region,
            "hub_url": result.hub_url,
            "manager": result.manager.id,
            "worker_image": result.image_id,
            "security_groups": {
                "manager": result.groups.manager,
                "manager2": result.groups.manager2,
                "worker": result.groups.worker,
            },
            "created_by_this_run": result.created.__dict__,
            "shared_file_system": self._file_system_id or None,
            # What a re-run verifies the manager with (launch/record.py reads it back).
            "host_keys": {i: list(keys) for i, keys in self.pins.items() if i == result.manager.id},
            "launched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path: Path = self.opts.record_file
        path.write_text(json.dumps(record, indent=2) + "\n")
