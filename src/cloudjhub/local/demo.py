"""`cloudjhub demo`: the whole system on loopback, with no AWS account.

moto (or another EC2-compatible endpoint), the fleet emulator, and a real
JupyterHub with configurable-http-proxy, the InstanceSpawner and
jupyterhub-idle-culler. Everything started here is ended here, by pid.
About 430 lines: one stack's start, hub restart and stop, kept together
because they share its state; its secrets are `demo_secrets`'.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..aws.local import LocalCloudEc2
from ..config import load_server_config
from ..hub import CONFIG_FILE
from ..hub.database import WAL_SUFFIXES
from ..hub.proxy import find_proxy
from ..hub.settings import (
    SETTINGS_ENV,
    HubSettings,
    JupyterHubConfig,
    ProxySettings,
    ServiceSettings,
    SharedPassword,
    SpawnerSettings,
    write_settings,
)
from ..shared_folder import SharedSettings
from ..waiting import TimedOut, poll_until
from . import motoserver
from .awslike import in_moto
from .awslike.proxy import CONTROL_PATH, AwsLikeProxy
from .awslike.settings import Behaviour
from .cloud import (
    VPC_CIDR,
    LocalNetwork,
    ensure_demo_backups,
    prepare_demo_cluster,
    prepare_network,
)
from .demo_secrets import (
    ADMIN_PASSWORD_FILE,
    USER_PASSWORD_FILE,
    make_passwords,
    write_credentials,
)
from .dlm_clock import DlmClock
from .emulator import FleetEmulator
from .guardian import Guardian
from .machine_share import MachineShare
from .ports import free_port
from .shared_dirs import delete_unmounted, unmount_instances
from .sshd import end_pids, instance_pids

DEMO_CLUSTER = "demo"
EMULATED_SSH_PORT = 2222
TOKEN_ENV = "CLOUDJHUB_DEMO_API_TOKEN"  # noqa: S105 - a variable name
# In the environment of the hub and everything it starts (proxy, services), so
# what a killed hub leaves behind can be found and ended by pid.
HUB_MARKER = "CLOUDJHUB_DEMO_HUB"
# A hub that keeps dying is not restarted forever.
MAX_RESTARTS, RESTART_WINDOW = 3, 300.0


# Quick to notice changes on loopback, where nothing takes long.
DEMO_SPAWNER_TRAITS: dict[str, float] = {
    "state_poll_interval": 0.5,
    "ssh_retry_interval": 0.5,
    "fleet_refresh_interval": 5,
    "hang_grace": 30,
}


def hub_settings(
    state_dir: Path,
    port: int,
    hub_port: int,
    proxy_api_port: int,
    idle_timeout: int,
    reaper_metrics_port: int | None = None,
    spawner_traits: dict[str, Any] | None = None,
    jupyterhub_config: JupyterHubConfig | None = None,
    named_server_limit: int | None = None,
) -> HubSettings:
    """The demo's hub: all on 127.0.0.1, state in `state_dir`. `admin` signs in with the
    admin password, any other name with the user password (JupyterHub's
    shared-password authenticator): a single-person tool, not a shared service.

    `spawner_traits` are InstanceSpawner traits on top of the demo's own;
    `jupyterhub_config` (--hub-config) is merged after everything; its InstanceSpawner
    part joins the spawner's traits, so the warm pool's service sees them too."""
    extra = dict(jupyterhub_config or {})
    spawner_extra = extra.pop("InstanceSpawner", {})
    return HubSettings(
        bind_url=f"http://127.0.0.1:{port}",
        hub_ip="127.0.0.1",
        hub_port=hub_port,
        proxy=ProxySettings(
            api_url=f"http://127.0.0.1:{proxy_api_port}",
            command=[find_proxy()],
            pid_file=str(state_dir / "proxy.pid"),
        ),
        db_url="sqlite:///" + str(state_dir / "jupyterhub.sqlite"),
        cookie_secret_file=str(state_dir / "jupyterhub_cookie_secret"),
        pid_file=str(state_dir / "jupyterhub.pid"),
        authenticator=SharedPassword(
            user_password_file=str(state_dir / USER_PASSWORD_FILE),
            admin_password_file=str(state_dir / ADMIN_PASSWORD_FILE),
        ),
        admin_users=["admin"],
        spawner=SpawnerSettings(
            server_config_file=str(state_dir / "server_config.json"),
            worker_command=[str(Path(sys.executable).with_name("cloudjhub-worker"))],
            usage_log=str(state_dir / "usage.jsonl"),
            host_key_store=str(state_dir / "host_keys.json"),
            traits={**DEMO_SPAWNER_TRAITS, **(spawner_traits or {}), **spawner_extra},
        ),
        services=ServiceSettings(
            python=sys.executable,
            idle_timeout=idle_timeout,
            reaper_metrics_port=reaper_metrics_port,
            # The demo's services also carry its marker, so they end with it.
            pass_environment=[HUB_MARKER],
        ),
        admin_token_env=TOKEN_ENV,
        jupyterhub_config=extra,
        named_server_limit=named_server_limit,
    )


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback URL we built
                return True
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the hub exited with status {proc.returncode}; see its log")
        return False

    try:
        poll_until(answers, timeout=timeout, interval=0.2)
    except TimedOut as late:
        raise RuntimeError(f"{url} did not answer within {timeout:.0f}s") from late


@dataclass
class DemoStack:
    state_dir: Path
    port: int = 8000
    idle_timeout: int | None = None
    api_token: str | None = None
    aws_endpoint: str | None = None
    say: object = print
    region: str = "us-east-1"
    vpc_cidr: str = VPC_CIDR
    moto: motoserver.LocalEc2 | None = None
    emulator: FleetEmulator | None = None
    guardian: Guardian | None = None
    hub: subprocess.Popen[bytes] | None = None
    network: LocalNetwork | None = None
    hub_url: str = ""
    hub_port: int = 0
    proxy_port: int = 0
    reaper_metrics_port: int = 0
    # HIBERNATE in server_config.json: workers hibernate instead of stopping.
    hibernate: bool = False
    # Extra InstanceSpawner traits for the hub's settings, e.g. {"self_stop_grace": 5}.
    spawner_config: dict[str, Any] = field(default_factory=dict)
    # c.InstanceSpawner.warm_pool_size (--warm-pool-size); 0 for no pool.
    warm_pool_size: int = 0
    # USER_HOME_EBS_SIZE (--user-home-ebs-size): a home volume per user, GB; 0 for none.
    user_home_ebs_size: int = 0
    # --backup-schedule (DLM's cron form, checked) and --backup-retain: a DLM policy.
    backup_schedule: str | None = None
    backup_retain: int = 7
    # --shared-storage (--course, --dropbox): the shared course folder (None: none).
    shared: SharedSettings | None = None
    dlm_clock: DlmClock | None = field(default=None, repr=False)
    # --hub-config: more JupyterHub config (class -> trait -> value), merged last.
    hub_config: JupyterHubConfig = field(default_factory=dict)
    # --ta-group: the teaching assistants' group (None: no TA role).
    ta_group: str | None = None
    # --named-servers: named servers on, at most this many per user (0: no limit).
    named_servers: int | None = None
    # --config FILE: the admin's own JupyterHub config, loaded after the demo's.
    extra_config: Path | None = None
    # --like-aws: the AWS behaviour layer in front of the endpoint (None: off).
    like_aws: Behaviour | None = None
    awslike: AwsLikeProxy | None = None
    # (admin, user): the sign-in passwords of this start.
    passwords: tuple[str, str] = field(default=("", ""), repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)
    _hub_env: dict[str, str] = field(default_factory=dict, repr=False)
    _hub_starts: list[float] = field(default_factory=list, repr=False)

    def _say(self, message: str) -> None:
        self.say(message)  # type: ignore[operator]

    def start_cloud(self) -> LocalCloudEc2:
        """EC2 endpoint, prepared network and the fleet emulator."""
        # Only its owner may look inside: keys, secrets, instance roots, the database.
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        # First, so that whatever starts next ends with the demo, even on SIGKILL.
        self.guardian = Guardian(self.state_dir, [f"{HUB_MARKER}={self.state_dir}"])
        self.guardian.start()
        if self.aws_endpoint:
            endpoint = self.aws_endpoint
        else:
            # moto's state lives in this process: what an earlier run left on
            # disk describes instances that no longer exist.
            unmount_instances(self.state_dir)  # a demo that died may have left binds
            for stale in (
                "instances",
                "volumes",
                "snapshots",
                *(f"jupyterhub.sqlite{suffix}" for suffix in WAL_SUFFIXES),
                "known_hosts",
                "usage.jsonl",
                "host_keys.json",
                "efs",
            ):
                path = self.state_dir / stale
                if path.is_dir():
                    if not delete_unmounted(path):
                        raise RuntimeError(f"{path}: still mounted there; unmount it first")
                elif path.exists():
                    path.unlink()
            self.moto = motoserver.LocalEc2()
            endpoint = self.moto.start()
            self._say(f"EC2 (moto) listening on {endpoint}")
        # The local cloud's own keys, never whatever real AWS keys this shell has:
        # they would be printed by --cloud-only. Our moto issues real ones, which
        # the hub inherits through its environment, and scripts read from a 0600 file.
        os.environ.update(motoserver.LOCAL_CREDENTIALS)
        if self.moto is not None:
            os.environ.update(self.moto.credentials)
        # What the demo's clients sign with, for scripts: the embedded endpoint's own
        # credentials, or the placeholder ones an --aws-endpoint is given.
        write_credentials(
            self.state_dir,
            self.moto.credentials if self.moto is not None else motoserver.LOCAL_CREDENTIALS,
        )
        machines_endpoint = endpoint
        if self.like_aws is not None:
            endpoint, machines_endpoint = self._start_like_aws(endpoint, self.like_aws)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        ec2 = LocalCloudEc2.connect(DEMO_CLUSTER, self.region, endpoint)
        self.network = prepare_network(ec2, endpoint, self.region, self.state_dir, self.vpc_cidr)
        share = MachineShare(self.state_dir)
        if share.reason:
            self._say(share.reason)
        self.emulator = FleetEmulator(
            LocalCloudEc2.connect(DEMO_CLUSTER, self.region, machines_endpoint, "emulator"),
            self.state_dir,
            EMULATED_SSH_PORT,
            publish_console=self.console_is_ours,
            **self._like_aws_machines(endpoint),  # type: ignore[arg-type]
            **self._own_moto_machines(),  # type: ignore[arg-type]
            share=share,
        )
        self.emulator.start()
        if self.moto is not None and self.moto.dlm_engine is not None:
            self.moto.dlm_engine.volumes_dir = self.emulator.volumes_dir
        return ec2

    @property
    def console_is_ours(self) -> bool:
        """Whether the emulator can write the console that GetConsoleOutput serves."""
        return self.moto is not None or self.awslike is not None

    def _start_like_aws(self, upstream: str, behaviour: Behaviour) -> tuple[str, str]:
        """The AWS behaviour layer in front of `upstream`: (clients' URL, the emulator's)."""
        self.awslike = AwsLikeProxy(upstream, self.region, behaviour)
        self.awslike.start()
        faults = ", ".join(f"{k}:{v:g}" for k, v in behaviour.faults.items()) or "none"
        self._say(
            f"AWS behaviour layer (--like-aws, time scale {behaviour.time_scale:g}, "
            f"faults: {faults}) on {self.awslike.url}, in front of {upstream}"
        )
        if self.moto is not None:
            in_moto.install(self.moto, behaviour)
        else:
            self._say(
                "private IP reuse after termination, EFS's creating states and IAM's "
                "propagation delay are not modelled with --aws-endpoint"
            )
        return self.awslike.url, self.awslike.internal_url

    def _like_aws_facts(self) -> dict[str, str]:
        if self.awslike is None:
            return {}
        return {
            "like_aws_control_url": self.awslike.url + CONTROL_PATH,
            "aws_upstream": self.awslike.upstream_url,
        }

    def _like_aws_machines(self, endpoint: str) -> dict[str, object]:
        if self.awslike is None:
            return {}
        return {
            "console": self.awslike.layer.console.write,
            "host_keys_once": True,
            "role_endpoint": endpoint,
        }

    def _own_moto_machines(self) -> dict[str, object]:
        """With our moto: instance roles get its credentials, machines trust its keys."""
        if self.moto is None:
            return {}
        return {
            "role_credentials": self.moto.role_credentials,
            "trusts_key": motoserver.trusts_key,
        }

    def exports(self) -> dict[str, str]:
        """Shell variables that point `cloudjhub launch` at the local cloud."""
        net = self.network
        assert net is not None
        login = getpass.getuser()
        env = {
            "AWS_ENDPOINT_URL": net.endpoint,
            "AWS_DEFAULT_REGION": net.region,
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
            "CLOUDJHUB_BASE_AMI": net.base_ami,
            "CLOUDJHUB_PRIVATE_SUBNET": net.private_subnet,
            "CLOUDJHUB_PUBLIC_SUBNET": net.public_subnet,
            "CLOUDJHUB_KEY_NAME": net.key_name,
            "CLOUDJHUB_KEY_FILE": str(net.key_file),
            "CLOUDJHUB_INSTANCE_PROFILE": net.instance_profile,
            # How the emulated machines differ from AWS: SSH on its own port,
            # reached at private IPs, the local login user, an unprivileged hub port.
            "CLOUDJHUB_SSH_PORT": str(EMULATED_SSH_PORT),
            "CLOUDJHUB_CONNECT_VIA": "private",
            "CLOUDJHUB_SERVER_USERNAME": login,
            "CLOUDJHUB_WORKER_USERNAME": login,
            "CLOUDJHUB_HUB_PORT": "8000",
            "CLOUDJHUB_ADMIN_CIDR": "127.0.0.0/8",
        }
        if not self.console_is_ours:  # an outside endpoint: we cannot write its console
            env["CLOUDJHUB_KNOWN_HOSTS"] = str(self.state_dir / "known_hosts")
        return env

    def start(self) -> None:
        ec2 = self.start_cloud()
        self.passwords = make_passwords(self.state_dir)
        assert self.network is not None
        timeout = self.idle_timeout
        if timeout is None:
            existing = self.state_dir / "server_config.json"
            timeout = (
                load_server_config(existing).JUPYTER_NOTEBOOK_TIMEOUT if existing.exists() else 3600
            )
        config = prepare_demo_cluster(
            ec2,
            self.network,
            self.state_dir,
            EMULATED_SSH_PORT,
            timeout,
            host_key_source="console" if self.console_is_ours else "known_hosts",
            progress=self._say,
            hibernate=self.hibernate,
            user_home_ebs_size=self.user_home_ebs_size,
            shared=self.shared,
        )
        if self.backup_schedule is not None:
            ensure_demo_backups(
                ec2, self.backup_schedule, self.backup_retain, self.user_home_ebs_size > 0
            )
            self._say(f"backups: {self.backup_schedule}, keep {self.backup_retain}")
            if self.moto is not None and self.moto.dlm_engine is not None:
                self.dlm_clock = DlmClock(self.moto.dlm_engine.run)  # snapshots on time
                self.dlm_clock.start()
        # Kept for the life of the demo: a restarted hub must be where the running
        # single-user servers (and their JUPYTERHUB_API_URL) expect it.
        self.hub_port, self.proxy_port = free_port(), free_port()
        self.reaper_metrics_port = free_port()
        settings = hub_settings(
            self.state_dir,
            self.port,
            self.hub_port,
            self.proxy_port,
            timeout,
            reaper_metrics_port=self.reaper_metrics_port,
            spawner_traits={
                **({"warm_pool_size": self.warm_pool_size} if self.warm_pool_size else {}),
                **self.spawner_config,
            },
            jupyterhub_config=self.hub_config,
            named_server_limit=self.named_servers,
        )
        if self.ta_group:
            access = settings.access.model_copy(update={"ta_group": self.ta_group})
            settings = settings.model_copy(update={"access": access})
        write_settings(settings, self.state_dir / "hub.json")
        env = dict(os.environ)
        env["CLOUDJHUB_SERVER_CONFIG"] = str(config)
        env[SETTINGS_ENV] = str(self.state_dir / "hub.json")
        env[HUB_MARKER] = str(self.state_dir)
        if self.api_token:
            env[TOKEN_ENV] = self.api_token
        self._hub_env = env
        self._start_hub()

    def may_restart_hub(self) -> bool:
        """Whether a hub that died may be started again (not if it keeps dying)."""
        recent = [t for t in self._hub_starts if time.monotonic() - t < RESTART_WINDOW]
        return len(recent) <= MAX_RESTARTS

    def restart_hub(self) -> None:
        """Start the hub again after it died, on the same ports and database.

        What the dead hub started (proxy, culler, reaper) is ended first. Servers it
        left running are adopted by the new hub, which polls each spawner on startup
        (cleanup_servers is False); the reaper stops workers nobody wants any more.
        """
        if self.hub is not None and self.hub.poll() is None:
            raise RuntimeError("the hub is still running")
        self._end_hub_leftovers()
        self._start_hub()

    def _config_file(self) -> Path:
        """The demo's hub config; with --config, a stub that loads it, then the admin's
        file (theirs, so trusted like any JupyterHub config), then checks profile_list
        as the hub's settings are checked at start."""
        if self.extra_config is None:
            return CONFIG_FILE
        stub = self.state_dir / "jupyterhub_config.py"
        stub.write_text(
            "c = get_config()  # noqa: F821\n"
            f"load_subconfig({str(CONFIG_FILE)!r})  # noqa: F821\n"
            f"load_subconfig({str(self.extra_config.resolve())!r})  # noqa: F821\n"
            "from cloudjhub.hub.apply import check_profile_list\n"
            "check_profile_list(c.InstanceSpawner.get('profile_list'))\n"
        )
        return stub

    def _start_hub(self) -> None:
        assert self.network is not None
        if self._log is None:
            self._log = open(self.state_dir / "jupyterhub.log", "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "jupyterhub", "-f", str(self._config_file())]
        # A session of its own, as on its own machine: Linux's scheduler (autogroup)
        # shares the CPU out by session, and in the demo's the local cloud (moto, the
        # like-AWS layer, the emulator) took most of it, the hub's event loop waiting
        # for the CPU 70-80% of a storm (benchmarks/results/2026-11-30-looplag-*.txt).
        # It is still ended by pid: by stop(), or by the guardian.
        self.hub = subprocess.Popen(
            cmd,
            cwd=self.state_dir,
            env=self._hub_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._hub_starts.append(time.monotonic())
        self.hub_url = f"http://127.0.0.1:{self.port}/"
        wait_http(f"{self.hub_url}hub/health", 120, self.hub)
        (self.state_dir / "demo.json").write_text(
            json.dumps(
                {
                    "hub_url": self.hub_url,
                    "aws_endpoint": self.network.endpoint,
                    "region": self.region,
                    "cluster": DEMO_CLUSTER,
                    "hub_pid": self.hub.pid,
                    "demo_pid": os.getpid(),
                    "usage_log": str(self.state_dir / "usage.jsonl"),
                    "reaper_metrics_url": f"http://127.0.0.1:{self.reaper_metrics_port}/metrics",
                    **self._like_aws_facts(),
                },
                indent=2,
            )
        )

    def stop(self) -> None:
        if self.hub is not None and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
        self._end_hub_leftovers()
        if self._log is not None:
            self._log.close()
        if self.dlm_clock is not None:
            self.dlm_clock.stop()
        if self.emulator is not None:
            self.emulator.stop()
        if self.awslike is not None:
            self.awslike.stop()
            in_moto.uninstall()
        if self.moto is not None:
            self.moto.stop()
        if self.guardian is not None:
            self.guardian.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "demo.json").unlink()

    def _end_hub_leftovers(self) -> None:
        """A hub ends its proxy and services when it stops, but not when it is killed."""
        self._end_leftover_proxy()
        end_pids(instance_pids(f"{HUB_MARKER}={self.state_dir}"))

    def _end_leftover_proxy(self) -> None:
        """The hub stops the proxy it started, unless it died first."""
        pid_file = self.state_dir / "proxy.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"configurable-http-proxy" in cmdline:
                end_pids([pid])
            pid_file.unlink()
