"""The pool's keeper and a claim's fresh listing read only pool-tagged workers: in a
storm, hundreds of users' workers are not listed again every round or every batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.pool_batch import Claimant, claim_batch
from cloudjhub.pool_keeper import Keeper, constant_target
from cloudjhub.tags import POOL_TAG

MakeWorker = Callable[..., Instance]
USERS = 6


@pytest.fixture
def listed(alpha_client: Any) -> list[dict[str, Any]]:
    """What each DescribeInstances through the `ec2` fixture returned: its parameters and
    the ids it listed."""
    seen: list[dict[str, Any]] = []

    def record(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        ids = [i["InstanceId"] for r in parsed.get("Reservations", []) for i in r["Instances"]]
        seen[-1]["ids"] = ids

    def params(params: dict[str, Any], **_: Any) -> None:
        seen.append({"params": dict(params)})

    alpha_client.meta.events.register("provide-client-params.ec2.DescribeInstances", params)
    alpha_client.meta.events.register("after-call.ec2.DescribeInstances", record)
    return seen


def users_workers(make_worker: MakeWorker) -> set[str]:
    return {make_worker(f"user{i}").id for i in range(USERS)}


def test_the_keepers_round_lists_only_pool_tagged_workers(
    ec2: LocalCloudEc2, spec: WorkerSpec, make_worker: MakeWorker, listed: list[dict[str, Any]]
) -> None:
    theirs = users_workers(make_worker)
    keeper = Keeper(ec2, spec, constant_target(2, "running"))
    pool = set(keeper.round().launched)
    listed.clear()
    assert keeper.round().members == 2
    assert listed, "the round read nothing"
    for call in listed:
        assert not theirs & set(call["ids"]), call["params"]  # users' workers not listed
    assert pool <= set(listed[0]["ids"])
    keyed = {"Name": "tag-key", "Values": [POOL_TAG]}
    assert keyed in listed[0]["params"]["Filters"]


def test_a_claims_fresh_listing_reads_only_ready_members(
    ec2: LocalCloudEc2, spec: WorkerSpec, make_worker: MakeWorker, listed: list[dict[str, Any]]
) -> None:
    theirs = users_workers(make_worker)
    [member] = Keeper(ec2, spec, constant_target(1, "running")).round().launched
    listed.clear()
    # No cached listing: the claim lists afresh.
    [got] = claim_batch(ec2, [Claimant("ann", "7", spec.instance_type)], ())
    assert isinstance(got, Instance) and got.id == member and got.user == "ann"
    assert listed and not any(theirs & set(call["ids"]) for call in listed)
    ready = {"Name": f"tag:{POOL_TAG}", "Values": ["ready"]}
    assert ready in listed[0]["params"]["Filters"]
