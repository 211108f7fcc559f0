"""An unlisted choice's instance type is checked at spawn against the region
(DescribeInstanceTypes): the hub's start cannot know which types a regex lets
through. A type the region lacks, or a GPU type without a GPU image, is an HTTP 400
naming the option, before any launch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tornado import web

from cloudjhub.aws.local import LocalCloudEc2
from tests.helpers import ApiCalls
from tests.unit.test_profiles import profiled_spawner, start_options


def unlisted_profile(regex: str, template: str, slug: str = "any") -> dict[str, Any]:
    """A profile whose option 'kind' takes only a value of the user's own (`regex`),
    which sets the instance type as `template` ("{value}" filled in)."""
    unlisted = {
        "enabled": True,
        "validation_regex": regex,
        "spawner_override": {"worker_instance_type": template},
    }
    return {
        "display_name": "Any",
        "slug": slug,
        "profile_options": {"kind": {"display_name": "Type", "unlisted_choice": unlisted}},
    }


OPEN = [unlisted_profile("[a-z0-9]+\\.[a-z0-9]+", "{value}")]


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("t3.huge", "option 'kind': eu-west-3 has no instance type 't3.huge'"),  # the hub's
        ("g4dn.xlarge", "option 'kind': g4dn.xlarge has GPUs, and this profile has no GPU"),
        ("t3.large", ""),
    ],
)
def test_an_unlisted_type_is_checked_against_the_region_at_spawn(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ec2: LocalCloudEc2,
    calls: ApiCalls,
    kind: str,
    says: str,
) -> None:
    spawner = profiled_spawner(tmp_path, monkeypatch, ec2, profile_list=OPEN, hibernate=False)
    calls.clear()
    pick = {"profile": "any", "kind--unlisted-choice": kind}
    if not says:
        start_options(spawner, pick)
        assert spawner.worker_instance_type == kind
        return
    with pytest.raises(web.HTTPError) as refused:
        start_options(spawner, pick)
    assert refused.value.status_code == 400
    assert str(refused.value.log_message).startswith(f"Bad user_options: {says}")
    assert set(calls) == {"DescribeInstanceTypes"}  # nothing launched
    asyncio.run(spawner.stop())  # JupyterHub stops a failed start: no EC2 call either
    assert set(calls) == {"DescribeInstanceTypes"}
