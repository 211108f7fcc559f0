"""Settings onto a JupyterHub config: what `jupyterhub_config.py` does, as a plain
function a test can call with a `traitlets.config.Config`.

Secrets are read here, from their files, when the hub starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from traitlets import TraitError
from traitlets.config import Config

from .. import fallback_types, profile_types
from ..aws.caller import name_caller
from ..aws.hub import HubEc2
from ..aws.pacing import DEFAULT_RESERVE, MAX_RESERVE, check_reserve
from ..config import (
    POOL_STATES,
    ConfigError,
    check_warm_pool,
    check_warm_pool_schedule,
    load_server_config,
)
from ..profiles import parse as parse_profiles
from .database import db_kwargs
from .services import hub_services, warm_pool_service
from .settings import HubSettings, Native, SharedPassword
from .signin import NATIVE_CLASS, apply_signin


def _secret(path: str) -> str:
    return Path(path).read_text().strip()


def apply(c: Config, settings: HubSettings, environ: Mapping[str, str] | None = None) -> None:
    """Set on `c` everything a cloudjhub hub is configured with.

    `environ` is the hub's environment (default: this process's), which the
    services' environments and the optional admin token come from.
    """
    name_caller("hub")
    env = os.environ if environ is None else environ
    hub, proxy = c.JupyterHub, c.ConfigurableHTTPProxy
    hub.bind_url = settings.bind_url
    if settings.tls is not None:
        hub.ssl_cert = settings.tls.cert
        hub.ssl_key = settings.tls.key
    hub.hub_ip = settings.hub_ip
    hub.hub_port = settings.hub_port
    proxy.api_url = settings.proxy.api_url
    proxy.command = list(settings.proxy.command)
    if settings.proxy.auth_token_file is not None:
        proxy.auth_token = _secret(settings.proxy.auth_token_file)
    proxy.pid_file = settings.proxy.pid_file
    hub.db_url = settings.db_url
    if kwargs := db_kwargs(settings.db_url):
        hub.db_kwargs = kwargs
    hub.cookie_secret_file = settings.cookie_secret_file
    hub.pid_file = settings.pid_file

    auth = settings.authenticator
    hub.authenticator_class = auth.kind
    if isinstance(auth, SharedPassword):
        c.SharedPasswordAuthenticator.user_password = _secret(auth.user_password_file)
        c.SharedPasswordAuthenticator.admin_password = _secret(auth.admin_password_file)
    elif isinstance(auth, Native):
        hub.authenticator_class = NATIVE_CLASS
        native = c.SeededNativeAuthenticator
        native.admin_password_file = auth.admin_password_file
        # Anyone may ask for an account; only an admin's approval lets it in.
        native.enable_signup = True
        native.open_signup = False
        native.minimum_password_length = 8
        native.check_common_password = True
    c.Authenticator.admin_users = set(settings.admin_users)
    # Who may sign in is the authenticator's call (NativeAuthenticator: the
    # approved accounts); JupyterHub's own allow list is not used.
    c.Authenticator.allow_all = True

    # Restarting the hub must not stop every user's instance.
    hub.cleanup_servers = False
    # Activity comes from the servers' own reports, not from proxy traffic,
    # which an open but idle browser tab generates forever.
    hub.last_activity_interval = 0
    hub.spawner_class = "cloudjhub"
    if settings.named_server_limit is not None:
        hub.allow_named_servers = True
        hub.named_server_limit_per_user = settings.named_server_limit
    spawner = c.InstanceSpawner
    spawner.server_config_file = settings.spawner.server_config_file
    spawner.worker_command = list(settings.spawner.worker_command)
    spawner.usage_log = settings.spawner.usage_log
    if settings.spawner.host_key_store is not None:
        spawner.host_key_store = settings.spawner.host_key_store
    for name, value in settings.spawner.traits.items():
        spawner[name] = value
    check_profiles(settings)

    hub.services, hub.load_roles = hub_services(settings, env)
    apply_signin(c, settings)
    size, state = warm_pool(settings)
    keys_dir = settings.spawner.traits.get("warm_pool_keys_dir")
    if not isinstance(keys_dir, str):
        # Beside the usage log: a directory the hub's services may already write.
        keys_dir = str(Path(settings.spawner.usage_log).with_name("pool-host-keys"))
        spawner.warm_pool_keys_dir = keys_dir
    if not isinstance(settings.spawner.traits.get("releases_dir"), str):
        # Beside the usage log, where `cloudjhub release` writes on the manager.
        spawner.releases_dir = str(Path(settings.spawner.usage_log).with_name("releases"))
    buckets_file = settings.spawner.traits.get("ec2_buckets_file")
    if not isinstance(buckets_file, str):
        buckets_file = str(Path(settings.spawner.usage_log).with_name("ec2-buckets.json"))
        spawner.ec2_buckets_file = buckets_file
    # Always: a schedule's window or `cloudjhub prewarm` may fill a pool of size 0.
    pool = warm_pool_service(settings, env, size, state, keys_dir, buckets_file)
    hub.services = [*hub.services, pool]
    # Last, so it can change any of the above (traitlets warns of unknown traits).
    c.merge(Config(settings.jupyterhub_config))


def warm_pool(settings: HubSettings) -> tuple[int, str]:
    """(warm_pool_size, warm_pool_state): the traits, else WARM_POOL_SIZE of
    server_config.json; the schedule's traits are checked too. A bad value stops the
    hub at start with one line (JupyterHub reports a TraitError from its config as one
    fatal line)."""
    traits = settings.spawner.traits
    state = traits.get("warm_pool_state", POOL_STATES[0])
    if "warm_pool_size" in traits:
        size = traits["warm_pool_size"]
    elif Path(settings.spawner.server_config_file).exists():
        size = load_server_config(settings.spawner.server_config_file).WARM_POOL_SIZE
    else:
        size = 0
    try:
        check_warm_pool(size, state)
        check_warm_pool_schedule(
            traits.get("warm_pool_schedule", []), traits.get("warm_pool_time_zone", "UTC")
        )
    except ConfigError as exc:
        raise TraitError(f"c.InstanceSpawner.{exc}") from None
    reserve = traits.get("ec2_bucket_reserve", DEFAULT_RESERVE)
    try:  # the keeper service is given it too: a bad one would fail there, again and again
        number = reserve if isinstance(reserve, int | float) else math.nan
        check_reserve(math.nan if isinstance(reserve, bool) else number)
    except ValueError:
        raise TraitError(
            f"c.InstanceSpawner.ec2_bucket_reserve: {reserve!r}; must be a fraction of each "
            f"bucket from 0 to {MAX_RESERVE:g}"
        ) from None
    assert isinstance(size, int) and isinstance(state, str)
    return size, state


def check_profiles(settings: HubSettings) -> None:
    """A malformed profile_list stops the hub at start with one line naming the profile
    and the field, not the first user who opens the spawn page."""
    raw = settings.spawner.traits.get("profile_list")
    check_profile_list(raw)
    fallbacks = settings.spawner.traits.get(fallback_types.TRAIT)
    config_file = Path(settings.spawner.server_config_file)
    if (raw or fallbacks) and config_file.exists():
        config = load_server_config(config_file)
        ec2 = HubEc2.connect(config.CLUSTER_NAME, config.REGION, config.AWS_ENDPOINT_URL)
        hibernate = bool(settings.spawner.traits.get("hibernate", config.HIBERNATE))
        try:
            if raw:
                profile_types.check(
                    parse_profiles(raw),
                    ec2.instance_type_info,
                    config.REGION,
                    config.HIBERNATE,
                    config.GPU_IMAGE,
                )
            fallback_types.check_at_start(
                fallbacks, ec2.instance_type_info, config.REGION, hibernate
            )
        except ValueError as exc:
            raise TraitError(f"c.InstanceSpawner.{exc}") from None


def check_profile_list(raw: object) -> None:
    """A static profile_list (a callable is asked at each spawn), or a TraitError whose
    one line JupyterHub prints as it refuses to start."""
    if raw is not None and not callable(raw):
        try:
            parse_profiles(raw)
        except ValueError as exc:
            raise TraitError(f"c.InstanceSpawner.{exc}") from None
