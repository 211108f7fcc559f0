"""An EC2 connection with our wording of its errors, one paginator and one guard.

Retries and backoff come from botocore's adaptive retry mode. Every call goes
through `Ec2Client.call`, which counts it in `cloudjhub_ec2_api_calls_total` and
turns failures into `CloudError`s whose message a user can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..metrics import count_ec2_call
from ..tags import (
    CLUSTER_TAG,
    ROLE_TAG,
    USER_TAG,
    Role,
    has_tags,
    server_of,
    tag_dict,
    tag_filters,
)
from .caller import user_agent_extra

RETRY_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=10,
    read_timeout=60,
)

# The code of a CloudError for an endpoint that is not a URL.
INVALID_ENDPOINT = "InvalidEndpoint"

# Instance states, named once. An instance in GONE_STATES will never run again.
GONE_STATES = frozenset({"shutting-down", "terminated"})
STOPPED_STATES = frozenset({"stopping", "stopped"})
UP_STATES = frozenset({"pending", "running"})
ALL_STATES = ("pending", "running", "stopping", "stopped", "shutting-down", "terminated")

# Shown to users on the spawn page: say what happened and what to do about it.
USER_MESSAGES = {
    "InsufficientInstanceCapacity": (
        "AWS has no spare {instance_type} capacity in this zone right now. "
        "Try again in a few minutes; if it persists, ask your admin to pick another instance type."
    ),
    "InstanceLimitExceeded": (
        "The AWS account has reached its limit of running instances. "
        "Ask your admin to raise the EC2 limit or to stop unused servers."
    ),
    "VcpuLimitExceeded": (
        "The AWS account has reached its vCPU limit for {instance_type} instances. "
        "Ask your admin to request a higher limit."
    ),
    "InvalidAMIID.NotFound": (
        "The worker image {image} does not exist (yet). "
        "If the cluster was just launched, wait for the image to finish; otherwise tell your admin."
    ),
    "InvalidAMIID.Unavailable": (
        "The worker image {image} is not available yet. Try again in a few minutes."
    ),
    "InvalidAMIID.Malformed": "The worker image id {image!r} is not valid. Tell your admin.",
}


class _Context(dict[str, str]):
    """Message context in which a missing fact reads as 'the requested one'."""

    def __missing__(self, key: str) -> str:
        return f"(the requested {key.replace('_', ' ')})"


def user_message(code: str, context: Mapping[str, str]) -> str | None:
    template = USER_MESSAGES.get(code)
    return template.format_map(_Context(context)) if template else None


class CloudError(Exception):
    """An AWS call failed; the message is fit to show a user."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class NotOurs(CloudError):
    """A destructive action named a resource not tagged for this cluster."""


@dataclass(frozen=True)
class Instance:
    id: str
    state: str
    instance_type: str
    private_ip: str | None
    launch_time: datetime | None
    availability_zone: str
    tags: dict[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    public_ip: str | None = None
    instance_profile: str | None = None
    key_name: str | None = None
    # Its place in the RunInstances that launched it (AmiLaunchIndex).
    launch_index: int = 0
    image_id: str = ""
    hibernation: bool = False
    # StateReason.Code, e.g. "Server.SpotInstanceTermination" when AWS reclaimed a spot one.
    state_reason: str = ""
    spot: bool = False

    @property
    def user(self) -> str | None:
        return self.tags.get(USER_TAG)

    @property
    def server(self) -> str:
        """The user's named server it is for; "" for the default server."""
        return server_of(self.tags)

    @property
    def cluster(self) -> str | None:
        return self.tags.get(CLUSTER_TAG)

    @property
    def role(self) -> str | None:
        return self.tags.get(ROLE_TAG)

    @property
    def gone(self) -> bool:
        """Terminated or on its way there: it will never run again."""
        return self.state in GONE_STATES

    @property
    def live(self) -> bool:
        return not self.gone

    @property
    def launched_at(self) -> float:
        return self.launch_time.timestamp() if self.launch_time else 0.0

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Instance:
        return cls(
            id=data["InstanceId"],
            state=data["State"]["Name"],
            instance_type=data.get("InstanceType", ""),
            private_ip=data.get("PrivateIpAddress") or None,
            launch_time=data.get("LaunchTime"),
            availability_zone=data.get("Placement", {}).get("AvailabilityZone", ""),
            tags=tag_dict(data.get("Tags")),
            public_ip=data.get("PublicIpAddress") or None,
            instance_profile=(data.get("IamInstanceProfile") or {}).get("Arn"),
            key_name=data.get("KeyName"),
            launch_index=int(data.get("AmiLaunchIndex") or 0),
            image_id=data.get("ImageId", ""),
            hibernation=bool((data.get("HibernationOptions") or {}).get("Configured")),
            state_reason=(data.get("StateReason") or {}).get("Code", ""),
            spot=data.get("InstanceLifecycle") == "spot",
            volumes=tuple(
                m["Ebs"]["VolumeId"] for m in data.get("BlockDeviceMappings", []) if "Ebs" in m
            ),
        )


def boto_client(
    service: str,
    region: str | None,
    endpoint_url: str | None = None,
    caller: str | None = None,
    **keys: str,
) -> Any:
    """A client from the standard credential chain (or `keys`: aws_access_key_id and
    aws_secret_access_key, for the local cloud's own clients), with adaptive retries,
    naming its caller in the User-Agent (the process's, or `caller`: caller.py).

    A None region or endpoint falls back to the chain (AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL, profiles); a missing region is a CloudError, not a traceback.
    """
    session = boto3.session.Session()
    try:
        return session.client(
            service,
            region_name=region,
            endpoint_url=endpoint_url,
            config=RETRY_CONFIG.merge(Config(user_agent_extra=user_agent_extra(caller))),
            **keys,
        )
    except ValueError as exc:  # a malformed endpoint URL
        raise CloudError(
            f"cannot make an {service.upper()} client: {exc}", INVALID_ENDPOINT
        ) from exc
    except BotoCoreError as exc:  # no region, a malformed one
        raise CloudError(
            f"cannot make an {service.upper()} client: {exc}", type(exc).__name__
        ) from exc


def make_client(
    region: str | None, endpoint_url: str | None = None, caller: str | None = None
) -> Any:
    return boto_client("ec2", region, endpoint_url, caller)


def default_region(fallback: str) -> str:
    """The region the standard boto3 chain picks (AWS_DEFAULT_REGION, profile), else fallback."""
    try:
        return boto3.session.Session().region_name or fallback
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        raise CloudError(f"cannot read the AWS configuration: {exc}", type(exc).__name__) from exc


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def call(
    client: Any, action: str, context: Mapping[str, str] | None = None, /, **kwargs: Any
) -> Any:
    """One AWS call, counted, with failures worded for the person who will read them."""
    service = client.meta.service_model.service_name.upper()
    try:
        reply = getattr(client, action)(**kwargs)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        count_ec2_call(action, code)
        message = user_message(code, context or {})
        if message is None:
            message = f"{service} {action} failed: {code}: {err.get('Message', '')}"
        raise CloudError(message, code) from exc
    except BotoCoreError as exc:
        count_ec2_call(action, type(exc).__name__)
        raise CloudError(f"{service} {action} failed: {exc}", type(exc).__name__) from exc
    count_ec2_call(action, "ok")
    return reply


class Ec2Client:
    """EC2 reads for one cluster, and the guard every destructive action passes."""

    def __init__(self, cluster: str, client: Any) -> None:
        self.cluster = cluster
        self.client = client

    @classmethod
    def connect(
        cls,
        cluster: str,
        region: str | None,
        endpoint_url: str | None = None,
        caller: str | None = None,
    ) -> Any:
        if caller is None:  # the process's caller (make_client's two-argument form)
            return cls(cluster, make_client(region, endpoint_url))
        return cls(cluster, make_client(region, endpoint_url, caller))

    def _call(self, action: str, context: Mapping[str, str] | None = None, /, **kwargs: Any) -> Any:
        return call(self.client, action, context, **kwargs)

    def _pages(self, action: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a paginated Describe call."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._call(action, **kwargs, **({"NextToken": token} if token else {}))
            out.extend(page.get(key, []))
            token = page.get("NextToken")
            if not token:
                return out

    def _by_id(
        self, action: str, key: str, id_key: str, id_filter: str, ids: list[str], **kwargs: Any
    ) -> dict[str, dict[str, Any]]:
        """Fresh describe of explicit ids; unknown ids are simply absent.

        A filter, not an id list: asking for a vanished id by id fails the whole
        call with *.NotFound."""
        out: dict[str, dict[str, Any]] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 200):
            flt = [{"Name": id_filter, "Values": chunk}]
            for item in self._pages(action, key, Filters=flt, **kwargs):
                out[item[id_key]] = item
        return out

    def _tagged(self, action: str, key: str, wanted: dict[str, str], **kwargs: Any) -> list[Any]:
        """Items carrying exactly these tags: a filtered read, then an exact check."""
        items = self._pages(action, key, Filters=tag_filters(wanted), **kwargs)
        return [i for i in items if has_tags(tag_dict(i.get("Tags")), wanted)]

    def _tagged_instances(self, wanted: dict[str, str]) -> list[Instance]:
        found = self._instances(Filters=tag_filters(wanted), MaxResults=1000)
        return [i for i in found if has_tags(i.tags, wanted)]

    def _instances(self, **kwargs: Any) -> list[Instance]:
        return [
            Instance.from_api(i)
            for reservation in self._pages("describe_instances", "Reservations", **kwargs)
            for i in reservation.get("Instances", [])
        ]

    def describe(self, instance_ids: Iterable[str]) -> list[Instance]:
        """Instances by id; one AWS no longer lists (terminated long ago) is absent.

        A filter, not InstanceIds: asking for a vanished id by InstanceIds fails
        the whole call with InvalidInstanceID.NotFound."""
        out: list[Instance] = []
        for chunk in chunks(list(dict.fromkeys(instance_ids)), 200):
            out.extend(self._instances(Filters=[{"Name": "instance-id", "Values": chunk}]))
        return out

    def refuse_unless_ours(
        self,
        kind: str,
        ids: list[str],
        tags_of: Mapping[str, Mapping[str, str]],
        roles: Iterable[Role] | None = None,
    ) -> None:
        """The one guard: refuse unless each id was just read back tagged for this
        cluster (and one of `roles`). `tags_of` maps each id found to its tags."""
        if not ids:
            raise NotOurs(f"refusing an EC2 action with no explicit {kind} ids")
        allowed = {r.value for r in roles} if roles is not None else None
        bad = [
            rid
            for rid in ids
            if rid not in tags_of
            or tags_of[rid].get(CLUSTER_TAG) != self.cluster
            or (allowed is not None and tags_of[rid].get(ROLE_TAG) not in allowed)
        ]
        if bad:
            what = f"{CLUSTER_TAG}={self.cluster}"
            if allowed is not None:
                what += f" with role {'/'.join(sorted(allowed))}"
            raise NotOurs(f"refusing to act on {kind} {', '.join(bad)}: not tagged {what}")

    def guard(self, instance_ids: Iterable[str], roles: Iterable[Role]) -> list[Instance]:
        """Re-read each instance and refuse unless it is tagged for this cluster and role."""
        ids = list(dict.fromkeys(instance_ids))
        found = {i.id: i for i in self.describe(ids)} if ids else {}
        self.refuse_unless_ours("instance", ids, {k: v.tags for k, v in found.items()}, roles)
        return [found[i] for i in ids]
