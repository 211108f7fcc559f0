"""Helpers shared by the unit and system tests."""

from __future__ import annotations

from collections import Counter
from typing import Any


class ApiCalls(Counter[str]):
    """AWS API calls a boto3 client made, by operation name (e.g. "DescribeInstances").

    Counted at botocore's `before-call` event, so it sees every call the code
    under test makes through that client, whichever door it went through."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        client.meta.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self[model.name] += 1
