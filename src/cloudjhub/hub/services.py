"""The hub-managed services every cloudjhub hub runs, each with only the scopes it needs.

jupyterhub-idle-culler stops idle servers; `cloudjhub reap` stops workers no
server wants; `cloudjhub warm-pool` keeps the warm pool at its size (always run, so that
`cloudjhub prewarm` needs no hub restart: with no pool it costs one
DescribeInstances of the workers and one of the manager every round). JupyterHub passes a service only a few of the hub's variables
(PATH, LANG and the like), so whatever else each needs is given here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import SERVER_CONFIG_ENV
from .settings import HubSettings

CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")
# The reaper lists users with active servers (list:users, with ?state=active) and
# sees their servers (read:servers, which implies read:users:name). Nothing more.
# Kept here rather than in reaper.py, so the hub's config does not import the
# reaper and its metrics never show up in the hub's own /hub/metrics.
REAPER_SCOPES = ("list:users", "read:servers")
DEMO_ADMIN_SERVICE = "demo-admin"
# Spawner traits the pool's keeper must also obey, and its options for them.
KEEPER_TRAITS = {
    "warm_pool_schedule": "--schedule",
    "warm_pool_time_zone": "--time-zone",
    "ssh_host_key_source": "--host-key-source",
    "ec2_request_buckets": "--ec2-request-buckets",
    "ec2_bucket_reserve": "--ec2-bucket-reserve",
}


def culler_every(timeout: int) -> int:
    """Check often enough that a server is culled within ~1.25 x the timeout."""
    return max(2, min(600, timeout // 4))


def warm_pool_service(
    settings: HubSettings,
    environ: Mapping[str, str],
    size: int,
    state: str,
    keys_dir: str,
    buckets_file: str = "",
) -> dict[str, Any]:
    """`cloudjhub warm-pool`: EC2 only (the instance role's), no hub API scopes."""
    aws = {k: v for k, v in environ.items() if k.startswith("AWS_")}
    passed = {k: environ[k] for k in settings.services.pass_environment if k in environ}
    command = [str(Path(settings.services.python).with_name("cloudjhub")), "warm-pool"]
    command += ["--size", str(size), "--state", state, "--keys-dir", keys_dir]
    if buckets_file:  # the hub's, so the two spend one copy of AWS's buckets
        command += ["--buckets-file", buckets_file]
    traits = settings.spawner.traits
    instance_type = traits.get("worker_instance_type")
    if isinstance(instance_type, str):
        command += ["--instance-type", instance_type]
    # The traits win over server_config.json here as in the spawner (checked by apply).
    for trait, option in KEEPER_TRAITS.items():
        value = traits.get(trait)
        if isinstance(value, str):
            command += [option, value]
        elif value is not None:
            command += [option, json.dumps(value)]
    return {
        "name": "cloudjhub-warm-pool",
        "command": command,
        "environment": {SERVER_CONFIG_ENV: settings.spawner.server_config_file, **aws, **passed},
    }


def hub_services(
    settings: HubSettings, environ: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(c.JupyterHub.services, c.JupyterHub.load_roles) for these settings.

    The reaper also gets the AWS chain's variables (the instance role's, on a
    manager); `environ` is the hub's environment at start.
    """
    svc = settings.services
    passed = {k: environ[k] for k in svc.pass_environment if k in environ}
    aws = {k: v for k, v in environ.items() if k.startswith("AWS_")}
    timeout = svc.idle_timeout
    reaper_args = (
        [] if svc.reaper_metrics_port is None else ["--metrics-port", str(svc.reaper_metrics_port)]
    )
    services: list[dict[str, Any]] = [
        {
            "name": "idle-culler",
            "environment": passed,
            "command": [
                svc.python,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={timeout}",
                f"--cull-every={culler_every(timeout)}",
            ],
        },
        {
            "name": "cloudjhub-reaper",
            "command": [
                str(Path(svc.python).with_name("cloudjhub")),
                "reap",
                "--usage-log",
                settings.spawner.usage_log,
                *reaper_args,
            ],
            "environment": {
                SERVER_CONFIG_ENV: settings.spawner.server_config_file,
                **aws,
                **passed,
            },
        },
    ]
    roles: list[dict[str, Any]] = [
        {"name": "idle-culler", "services": ["idle-culler"], "scopes": list(CULLER_SCOPES)},
        {
            "name": "cloudjhub-reaper",
            "services": ["cloudjhub-reaper"],
            "scopes": list(REAPER_SCOPES),
        },
    ]
    token = environ.get(settings.admin_token_env) if settings.admin_token_env else None
    if token:
        services.append({"name": DEMO_ADMIN_SERVICE, "api_token": token})
        roles.append({"name": "admin", "services": [DEMO_ADMIN_SERVICE]})
    return services, roles
