"""Before a command's first AWS call: a region AWS has, and an endpoint that answers.

A wrong region or endpoint is the user's to fix, so it must fail at once with
one line, not after botocore has retried a refused connection for a minute.
"Unknown" is decided without calling AWS: a region is known when botocore's
endpoint data lists it in one of AWS's partitions. Behind a custom endpoint
(moto, a local cloud) any well-formed region name is allowed.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .caller import user_agent_extra
from .client import INVALID_ENDPOINT, RETRY_CONFIG, CloudError

# The shape of every AWS region name (us-east-1, us-gov-west-1, eusc-de-east-1).
REGION_SYNTAX = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$")
UNKNOWN_REGION = "UnknownRegion"
UNREACHABLE = "EndpointConnectionError"


@functools.cache
def _endpoint_data() -> dict[str, Any]:
    data: dict[str, Any] = botocore.session.get_session().get_data("endpoints")
    return data


def known_regions() -> list[str]:
    """Every region of every AWS partition that this botocore knows."""
    return sorted({r for p in _endpoint_data()["partitions"] for r in p.get("regions", {})})


def is_aws_endpoint(url: str) -> bool:
    """The URL is one of AWS's own (a partition's DNS suffix), not a custom endpoint."""
    host = (urlsplit(url).hostname or "").lower()
    suffixes = {p["dnsSuffix"] for p in _endpoint_data()["partitions"]}
    return any(host.endswith("." + suffix) for suffix in suffixes)


def check_region(region: str, custom_endpoint: bool = False) -> str:
    """`region` if AWS has it (or, behind a custom endpoint, if it is shaped like one)."""
    if REGION_SYNTAX.fullmatch(region) and (custom_endpoint or region in known_regions()):
        return region
    if custom_endpoint:
        allowed = "a region name like us-east-1"
    else:
        allowed = (
            f"one of {', '.join(known_regions())} (any name like us-east-1 with a custom endpoint)"
        )
    raise CloudError(f"unknown region {region!r}: expected {allowed}", UNKNOWN_REGION)


def _fail_fast(state: dict[str, bool]) -> Any:
    def needs_retry(response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        if response is not None:
            state["reached"] = True
        elif not state["reached"] and isinstance(caught_exception, BotoConnectionError):
            raise caught_exception  # before botocore's retry handler schedules a retry

    return needs_retry


def checked(client: Any) -> Any:
    """`client`, once its region is known to be real, and failing at once on a
    connection error until its endpoint has answered: an endpoint that never
    answered is a wrong one, not a blip worth a minute of retries."""
    check_region(client.meta.region_name, not is_aws_endpoint(client.meta.endpoint_url))
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register_first(f"needs-retry.{service}", _fail_fast({"reached": False}))
    return client


def check_reachable(endpoint_url: str, region: str) -> None:
    """One unsigned call to `endpoint_url`: any answer, even a refusal, means it is
    there; only a failed connection is a CloudError (code UNREACHABLE)."""
    unsigned = RETRY_CONFIG.merge(
        Config(signature_version=UNSIGNED, user_agent_extra=user_agent_extra())
    )
    try:
        made = boto3.session.Session().client(
            "ec2", region_name=region, endpoint_url=endpoint_url, config=unsigned
        )
    except (BotoCoreError, ValueError) as exc:
        raise CloudError(f"--aws-endpoint {endpoint_url}: {exc}", INVALID_ENDPOINT) from exc
    client = checked(made)
    try:
        client.describe_regions()
    except ClientError:
        return
    except BotoConnectionError as exc:
        raise CloudError(f"--aws-endpoint {endpoint_url}: {exc}", UNREACHABLE) from exc
    except BotoCoreError:
        return  # it answered, with something botocore could not read
