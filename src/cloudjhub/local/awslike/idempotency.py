"""RunInstances with a ClientToken, as AWS does it and moto does not.

Source: "Ensuring idempotency in Amazon EC2 API requests". A retried request with
the same client token and the same parameters succeeds without launching
anything more, and returns the original result; with the same token but other
parameters (Region and Availability Zone aside) it fails with
IdempotentParameterMismatch, which the layer answers only as an injected fault.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass

# Parameters that say nothing about what is launched.
_IGNORED = frozenset({"Action", "Version", "ClientToken", "DryRun"})


def fingerprint(params: Mapping[str, str]) -> str:
    kept = sorted(
        (k, v)
        for k, v in params.items()
        if k not in _IGNORED and not k.startswith("Placement.AvailabilityZone")
    )
    return hashlib.sha256(repr(kept).encode()).hexdigest()


@dataclass(frozen=True)
class Launch:
    fingerprint: str
    reply: bytes


class ClientTokens:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._launches: dict[str, Launch] = {}
        self._token_locks: dict[str, threading.Lock] = {}

    def lock_for(self, token: str) -> threading.Lock:
        """Held across a launch, so a retry that overtakes it waits for its result."""
        with self._lock:
            return self._token_locks.setdefault(token, threading.Lock())

    def find(self, token: str) -> Launch | None:
        with self._lock:
            return self._launches.get(token)

    def record(self, token: str, params: Mapping[str, str], reply: bytes) -> None:
        with self._lock:
            self._launches.setdefault(token, Launch(fingerprint(params), reply))
