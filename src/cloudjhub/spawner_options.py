"""InstanceSpawner's options: every trait, with its help and its default.

Most defaults come from server_config.json, one visible line per trait
(`from_config`), so grep and type checkers see them; the file is read once per
hub process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError
from traitlets import Bool, Dict, Enum, Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable
from traitlets.traitlets import DefaultHandler

from . import hibernation, host_keys, usage
from .config import (
    POOL_STATES,
    ConfigError,
    ServerConfig,
    check_warm_pool,
    check_warm_pool_schedule,
    error_line,
    load_server_config,
    server_config_path,
)
from .install_paths import INSTALL_BIN

_server_configs: dict[str, ServerConfig] = {}


def _cached_server_config(path: str) -> ServerConfig:
    """Read once per hub process, not once per spawner: the file only changes
    with a relaunch, which restarts the hub."""
    if path not in _server_configs:
        _server_configs[path] = load_server_config(path)
    return _server_configs[path]


@contextmanager
def trait_error(prefix: str = "") -> Iterator[None]:
    """A trait validator's check: its ValueError (ConfigError; pydantic's, in one line)
    becomes the TraitError traitlets reports, after `prefix`."""
    try:
        yield
    except ValidationError as exc:
        raise TraitError(prefix + error_line(exc)) from None
    except ValueError as exc:
        raise TraitError(prefix + str(exc)) from None


class SpawnError(Exception):
    """A spawn failed; the message is shown to the user.

    JupyterHub shows an exception's `jupyterhub_message` on the spawn page and as the
    `message` of the REST API's error; for any other exception the API says only
    "Internal Server Error"."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


def from_config(trait: str, key: str) -> DefaultHandler:
    """The default of `trait`: `key` of server_config.json, read when first asked for.

    A key the file cannot have fails at import, not at a user's spawn.
    """
    if key not in ServerConfig.model_fields:
        raise AttributeError(f"server_config.json has no key {key} (default of {trait})")

    def read(self: InstanceSpawnerOptions) -> Any:
        return getattr(self.server_config, key)

    handler = default(trait)
    handler(read)  # an EventHandler keeps the function it is called with
    return handler


class InstanceSpawnerOptions(LoggingConfigurable):
    """The options InstanceSpawner adds to JupyterHub's Spawner (`c.InstanceSpawner.<option>`).

    A mixin, not a Spawner: JupyterHub requires every Spawner subclass to define
    start, stop and poll."""

    _server_config: ServerConfig | None = None

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
    delete_home_on_user_delete = Bool(
        False,
        help="When a user is deleted in JupyterHub, also delete their home volumes (their "
        "instances are always terminated). False keeps the volumes, still tagged with the "
        "deleted user's id, so no new user of the same name gets them and an admin can "
        "recover the files. True needs ec2:DeleteVolume in the hub's IAM policy "
        "(`cloudjhub iam-policy --delete-home-volumes`).",
    ).tag(config=True)
    delete_home_on_remove = Bool(
        False,
        help="When a named server is removed (DELETE /users/NAME/servers/SERVER with "
        '{"remove": true}, or the idle culler\'s --remove-named-servers), also delete its '
        "home volume (its instance is always terminated). False keeps the volume for a "
        "server of the same name made later. True needs ec2:DeleteVolume in the hub's IAM "
        "policy (`cloudjhub iam-policy --delete-home-volumes`).",
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

    warm_pool_size = Integer(
        help="Unassigned workers of worker_instance_type the hub keeps launched (tagged "
        "cloudjhub:pool=ready) for first logins; a user's first spawn claims one and the "
        "pool refills in the background (server_config WARM_POOL_SIZE; 0 for none).",
    ).tag(config=True)
    warm_pool_state = Enum(
        list(POOL_STATES),
        default_value="stopped",
        help="State of warm-pool workers: 'stopped' costs only their disks; 'running' "
        "costs compute and gives the fastest first login.",
    ).tag(config=True)

    warm_pool_keys_dir = Unicode(
        "/var/lib/cloudjhub/pool-host-keys",
        help="Directory where the warm pool's keeper records each pool worker's SSH host "
        "keys from its first boot, so claiming a stopped one can pin them.",
    ).tag(config=True)

    warm_pool_schedule = List(
        Dict(),
        help="Windows during which the warm pool has another size, each "
        '{"cron": "50 8 * * MON,WED", "duration": 5400, "size": 120, "state": "running"}: '
        "it opens at each time the cron expression names (in warm_pool_time_zone) and "
        "stays open `duration` seconds; `state` defaults to warm_pool_state. While "
        "windows overlap the largest size wins (of equal sizes, 'running'); outside "
        "every window the pool is warm_pool_size (server_config WARM_POOL_SCHEDULE).",
    ).tag(config=True)
    warm_pool_time_zone = Unicode(
        help="IANA time zone (e.g. Europe/Berlin) in which warm_pool_schedule's cron "
        "expressions are read (server_config WARM_POOL_TIME_ZONE, default UTC).",
    ).tag(config=True)

    @default("warm_pool_schedule")
    def _default_warm_pool_schedule(self) -> list[dict[str, Any]]:
        windows = self.server_config.WARM_POOL_SCHEDULE
        return [w.model_dump(exclude_none=True) for w in windows]

    @validate("warm_pool_schedule", "warm_pool_time_zone")
    def _check_warm_pool_schedule(self, proposal: Any) -> Any:
        values = {"warm_pool_schedule": [], "warm_pool_time_zone": "UTC"}
        values[proposal["trait"].name] = proposal["value"]
        with trait_error():
            check_warm_pool_schedule(values["warm_pool_schedule"], values["warm_pool_time_zone"])
        return proposal["value"]

    @validate("warm_pool_size")
    def _check_warm_pool_size(self, proposal: Any) -> Any:
        with trait_error():
            check_warm_pool(proposal["value"], POOL_STATES[0])
        return proposal["value"]

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

    # Defaults from server_config.json: trait, key.
    _default_cluster_name = from_config("cluster_name", "CLUSTER_NAME")
    _default_region = from_config("region", "REGION")
    _default_aws_endpoint_url = from_config("aws_endpoint_url", "AWS_ENDPOINT_URL")
    _default_worker_ami = from_config("worker_ami", "WORKER_AMI")
    _default_subnet_id = from_config("subnet_id", "SUBNET_ID")
    _default_security_group_ids = from_config("security_group_ids", "WORKER_SECURITY_GROUPS")
    _default_key_name = from_config("key_name", "KEY_NAME")
    _default_worker_instance_type = from_config("worker_instance_type", "WORKER_INSTANCE_TYPE")
    _default_worker_ebs_size = from_config("worker_ebs_size", "WORKER_EBS_SIZE")
    _default_user_home_ebs_size = from_config("user_home_ebs_size", "USER_HOME_EBS_SIZE")
    _default_idle_timeout = from_config("idle_timeout", "JUPYTER_NOTEBOOK_TIMEOUT")
    _default_hibernate = from_config("hibernate", "HIBERNATE")
    _default_warm_pool_size = from_config("warm_pool_size", "WARM_POOL_SIZE")
    _default_warm_pool_time_zone = from_config("warm_pool_time_zone", "WARM_POOL_TIME_ZONE")

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
    host_key_store = Unicode(
        host_keys.HOST_KEY_STORE,
        help="File where the hub keeps each instance's pinned SSH host keys, by instance "
        "id (never by IP), learned once from ssh_host_key_source. It outlives the hub's "
        "database, so neither a lost database nor a stop/start (cloud-init prints the keys "
        "to the console only on an instance's first boot) locks a user out. Written "
        "atomically, mode 0600; pins of terminated instances are dropped as they are seen, "
        "and of instances this cluster no longer lists after an hour, so give each hub its own.",
    ).tag(config=True)

    # Defaults from server_config.json: trait, key.
    _default_ssh_username = from_config("ssh_username", "WORKER_USERNAME")
    _default_ssh_key_file = from_config("ssh_key_file", "SSH_KEY_FILE")
    _default_ssh_port = from_config("ssh_port", "SSH_PORT")
    _default_ssh_host_key_source = from_config("ssh_host_key_source", "SSH_HOST_KEY_SOURCE")
    _default_ssh_known_hosts = from_config("ssh_known_hosts", "SSH_KNOWN_HOSTS")

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

    @property
    def server_config(self) -> ServerConfig:
        if self._server_config is None:
            try:
                self._server_config = _cached_server_config(self.server_config_file)
            except ConfigError as exc:
                raise SpawnError(f"cloudjhub is misconfigured: {exc}") from exc
        return self._server_config
