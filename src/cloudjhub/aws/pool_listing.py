"""The running warm-pool members of one cluster, read by a bare EC2 client.

For whoever waits for the pool from outside a hub (benchmarks/storm.py waits for it
to fill before its class): the cluster's workers with the pool's tag, running; not
another cluster's in the same region. Which of them a claim may hand out is
warm_pool.ready_members's to say.
"""

from __future__ import annotations

from typing import Any

from ..tags import POOL_READY, POOL_TAG, Role, has_tags, selector, tag_filters
from .client import Ec2Client, Instance


def running_pool_instances(client: Any, cluster: str) -> list[Instance]:
    """Running workers of `cluster` tagged as pool members (`ready`), claimed or not."""
    wanted = {**selector(cluster, Role.WORKER), POOL_TAG: POOL_READY}
    running = {"Name": "instance-state-name", "Values": ["running"]}
    found = Ec2Client(cluster, client)._instances(Filters=[*tag_filters(wanted), running])
    return [i for i in found if has_tags(i.tags, wanted)]
