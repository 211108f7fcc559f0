"""The running warm-pool members of a region, read by a bare EC2 client.

For whoever waits for the pool from outside a hub (benchmarks/storm.py waits for it
to fill before its class): no cluster, just the pool's tag and the running state.
Which of them a claim may hand out is warm_pool.ready_members's to say.
"""

from __future__ import annotations

from typing import Any

from ..tags import POOL_READY, POOL_TAG, tag_filters
from .client import Ec2Client, Instance


def running_pool_instances(client: Any) -> list[Instance]:
    """Running instances tagged as pool members (`ready`), claimed or not."""
    running = {"Name": "instance-state-name", "Values": ["running"]}
    filters = [*tag_filters({POOL_TAG: POOL_READY}), running]
    return Ec2Client("", client)._instances(Filters=filters)
