"""What every delete of teardown reports: the resource, and why it is still there."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..aws.client import CloudError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Item:
    """A resource to delete, with a label a person can recognise."""

    id: str
    label: str = ""


@dataclass(frozen=True)
class Failure:
    resource: str
    reason: str


def each(
    kind: str, items: Iterable[Item], delete: Callable[[str], None], progress: Progress
) -> list[Failure]:
    failures = []
    for item in items:
        try:
            delete(item.id)
            progress(f"deleted {kind} {item.id}")
        except CloudError as exc:
            failures.append(Failure(f"{kind} {item.id}", str(exc)))
    return failures
