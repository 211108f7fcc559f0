"""Instance states that take time, as on AWS.

moto changes an instance's state at once. AWS goes through `pending` on launch
and start, `stopping` on stop and `shutting-down` on terminate before the
state the API call asked for (EC2 User Guide, "Instance state changes"). The
layer lets moto change state at once and shows the in-between state until the
transition's time is up: what clients see is what AWS would show.

AWS refuses to start an instance that is still `stopping` with
IncorrectInstanceState (StartInstances); `refuse_start` says so.

A launch is `pending` from the moment its instances exist, not only once the
RunInstances reply is back: moto makes them one by one, already `running`, long
before a launch of hundreds replies, and a look in between (the fleet emulator's)
would boot them and then see them go back to `pending`. While a launch is in
flight, an instance the layer has never seen is one of its instances.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .settings import Behaviour

# The EC2 API's state codes (InstanceState).
STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}


@dataclass(frozen=True)
class Transition:
    state: str  # what the instance shows meanwhile
    until: float


class Lifecycle:
    """Transitions in progress, per instance id."""

    def __init__(self, behaviour: Behaviour, clock: Callable[[], float] = time.monotonic) -> None:
        self.behaviour = behaviour
        self.clock = clock
        self._lock = threading.Lock()
        self._transitions: dict[str, Transition] = {}
        # RunInstances calls in flight, and the instances seen outside any launch.
        self._launches = 0
        self._known: set[str] = set()

    def _begin(self, ids: Iterable[str], state: str, seconds: float) -> None:
        with self._lock:
            until = self.clock() + seconds
            for instance_id in ids:
                self._transitions[instance_id] = Transition(state, until)

    def launch_begins(self) -> None:
        with self._lock:
            self._launches += 1

    def launch_ends(self) -> None:
        """A RunInstances is answered (or failed); its instances' `launched` came first."""
        with self._lock:
            self._launches = max(0, self._launches - 1)

    def launched(self, ids: Iterable[str]) -> None:
        self._begin(ids, "pending", self.behaviour.pending)

    def started(self, ids: Iterable[str]) -> None:
        self._begin(ids, "pending", self.behaviour.pending)

    def stopped(self, ids: Iterable[str]) -> None:
        self._begin(ids, "stopping", self.behaviour.stopping)

    def terminated(self, ids: Iterable[str]) -> None:
        self._begin(ids, "shutting-down", self.behaviour.shutting_down)

    def visible(self, instance_id: str, actual: str) -> str:
        """The state AWS would show for an instance whose endpoint says `actual`."""
        with self._lock:
            transition = self._transitions.get(instance_id)
            if transition is None:
                if instance_id not in self._known:
                    if self._launches and actual == "running":
                        return "pending"  # made by a launch still in flight
                    self._known.add(instance_id)
                return actual
            self._known.add(instance_id)
            if self.clock() >= transition.until:
                del self._transitions[instance_id]
                return actual
            return transition.state

    def refuse_start(self, ids: Iterable[str], actual: Callable[[str], str]) -> str | None:
        """The IncorrectInstanceState message for a start of a still-stopping instance."""
        for instance_id in ids:
            if self.visible(instance_id, actual(instance_id)) == "stopping":
                return (
                    f"The instance '{instance_id}' is not in a state from which it can be started."
                )
        return None
