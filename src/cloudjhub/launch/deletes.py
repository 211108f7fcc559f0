"""What every delete of teardown reports: the resource, and why it is still there."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..aws.client import CloudError
from ..waiting import TimedOut, poll_until

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


@dataclass(frozen=True)
class Retry:
    """Which refusal of a delete is temporary, and what to say while and after waiting."""

    code: str  # the error code that means "not yet" (DependencyViolation, ...)
    waiting: Callable[[str, float], str]  # (the blocked resources, seconds so far)
    late: Callable[[CloudError, TimedOut], str]  # the reason once time is up
    gone: str = ""  # an error code that means it is already deleted


def retried(
    items: Iterable[Item],
    delete: Callable[[Item], None],
    name: Callable[[Item], str],
    retry: Retry,
    progress: Progress,
    timeout: float,
    poll: float,
) -> list[Failure]:
    """Delete each item; one refused with `retry.code` is tried again every `poll`
    seconds until `timeout`, and only then reported with `retry.late`."""
    failures: list[Failure] = []
    pending = list(items)

    def attempt() -> list[tuple[Item, CloudError]]:
        nonlocal pending
        blocked: list[tuple[Item, CloudError]] = []
        for item in pending:
            try:
                delete(item)
                progress(f"deleted {name(item)}")
            except CloudError as exc:
                if exc.code == retry.code:
                    blocked.append((item, exc))
                elif not retry.gone or exc.code != retry.gone:
                    failures.append(Failure(name(item), str(exc)))
        pending = [item for item, _ in blocked]
        return blocked

    def report(blocked: list[tuple[Item, CloudError]], elapsed: float) -> None:
        progress(retry.waiting(", ".join(name(item) for item, _ in blocked), elapsed))

    try:
        poll_until(attempt, timeout=timeout, interval=poll, done=lambda b: not b, progress=report)
    except TimedOut as late:
        failures += [Failure(name(item), retry.late(exc, late)) for item, exc in late.value]
    return failures
