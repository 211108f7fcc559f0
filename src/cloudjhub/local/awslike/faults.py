"""Failures AWS answers that moto never does, injected on request (`--fault NAME[:RATE]`).

Each fault applies only where AWS would answer it, and then fails a request with
probability RATE (default 1, every time):

- InsufficientInstanceCapacity: RunInstances and StartInstances, when AWS has no
  capacity for the type (EC2 API error codes: a server error, HTTP 500, so SDKs
  retry it before giving up).
- DependencyViolation: DeleteSecurityGroup of a group still in use by an instance
  (DeleteSecurityGroup: a group associated with an instance or network interface
  cannot be deleted); an instance uses it until it is terminated.
- InvalidSnapshot.InUse: DeleteSnapshot of a snapshot whose image was deregistered
  moments ago (DeleteSnapshot: a snapshot used by a registered AMI cannot be
  deleted; deregistration takes a while to be seen).
- IdempotentParameterMismatch: RunInstances with a ClientToken already used with
  other parameters ("Ensuring idempotency in Amazon EC2 API requests").
- SpotMaxPriceTooLow, MaxSpotInstanceCountExceeded: RunInstances of a spot
  instance (InstanceMarketOptions MarketType spot) that AWS will not fill: the
  price asked is below the spot price, or the account's spot limit is reached
  (EC2 API error codes); on-demand requests never get them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable

from .settings import Behaviour

# HTTP status AWS answers each code with.
STATUS = {
    "InsufficientInstanceCapacity": 500,
    "DependencyViolation": 400,
    "InvalidSnapshot.InUse": 400,
    "IdempotentParameterMismatch": 400,
    "SpotMaxPriceTooLow": 400,
    "MaxSpotInstanceCountExceeded": 400,
    "IncorrectInstanceState": 400,
    "UnsupportedOperation": 400,
    "RequestLimitExceeded": 503,
}


class Faults:
    def __init__(
        self,
        behaviour: Behaviour,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rates = dict(behaviour.faults)
        self.snapshot_release = behaviour.snapshot_release
        self.rng = rng or random.Random()
        self.clock = clock
        self._lock = threading.Lock()
        self._released_at: dict[str, float] = {}  # snapshot id -> when its image went
        self.injected: dict[str, int] = {}

    def set_rates(self, rates: dict[str, float]) -> None:
        with self._lock:
            self.rates = dict(rates)

    def hits(self, name: str) -> bool:
        """Whether fault `name` fails this request (its condition already holds)."""
        with self._lock:
            rate = self.rates.get(name, 0.0)
            hit = rate > 0 and self.rng.random() < rate
            if hit:
                self.injected[name] = self.injected.get(name, 0) + 1
            return hit

    def image_deregistered(self, snapshot_ids: Iterable[str]) -> None:
        with self._lock:
            now = self.clock()
            for snapshot_id in snapshot_ids:
                self._released_at[snapshot_id] = now

    def snapshot_in_use(self, snapshot_id: str) -> bool:
        """Its image was deregistered too recently for AWS to have noticed."""
        with self._lock:
            when = self._released_at.get(snapshot_id)
            return when is not None and self.clock() - when < self.snapshot_release
