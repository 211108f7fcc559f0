"""What a failed launch undoes: what this run created, newest first.

Each undo is a call into `teardown`, so a launch's rollback and `cloudjhub
destroy` delete each kind of resource the same way (tag guard, and for
security groups the DependencyViolation retry). Teardown reports `Failure`s
rather than raising; an undo with any is reported as not rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..aws.admin import AdminEc2
from ..aws.client import Instance
from ..tags import Role
from . import image_deletes, teardown
from .deletes import Failure, Item

Say = Callable[[str], None]
Undo = Callable[[], list[Failure]]


class UndoLog:
    """The undo of each step, in the order the steps ran.

    Deletes wait with the launch's own `timeout` and `poll` (a group delete that
    hits DependencyViolation retries that long), not teardown's defaults.
    """

    def __init__(self, ec2: AdminEc2, say: Say, timeout: float, poll: float) -> None:
        self.ec2 = ec2
        self.say = say
        self.timeout = timeout
        self.poll = poll
        self._steps: list[tuple[str, Undo]] = []

    def add(self, what: str, undo: Undo) -> None:
        self._steps.append((what, undo))

    def keep(self) -> None:
        """--keep-on-failure: say what stays."""
        for what, _ in self._steps:
            self.say(f"  kept {what}")

    def roll_back(self) -> None:
        """Undo every step, newest first; one that fails does not stop the others."""
        for what, undo in reversed(self._steps):
            try:
                failures = undo()
            except Exception as exc:  # whatever it was, the older steps still get undone
                self.say(f"  could NOT roll back {what}: {exc}")
                continue
            if failures:
                reasons = "; ".join(f"{f.resource}: {f.reason}" for f in failures)
                self.say(f"  could NOT roll back {what}: {reasons}")
            else:
                self.say(f"  rolled back {what}")

    # ---- the undo of each kind of resource, by teardown ----------------------------

    def _progress(self, message: str) -> None:
        self.say(f"    {message}")

    def groups(self, made: Mapping[str, str]) -> list[Failure]:
        """Newest first: manager2 and worker refer to the groups made before them."""
        newest_first = [Item(gid, name) for gid, name in reversed(list(made.items()))]
        return teardown.delete_groups(
            self.ec2, newest_first, self._progress, self.timeout, self.poll
        )

    def images(self, made: list[str]) -> list[Failure]:
        failures: list[Failure] = []
        for image_id in made:
            failures += image_deletes.delete_image(
                self.ec2, image_id, self._progress, self.timeout, self.poll
            )
        return failures

    def manager(self, instance: Instance) -> list[Failure]:
        return teardown.terminate(
            self.ec2, [instance], [Role.MANAGER], self._progress, self.timeout, self.poll
        )

    def key_pair(self, name: str) -> list[Failure]:
        return teardown.delete_key_pair(self.ec2, name, self._progress)
