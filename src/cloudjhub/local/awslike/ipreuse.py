"""Private IPv4 addresses reused after termination, as on AWS (moto never does).

Source: EC2 User Guide, "Amazon EC2 instance IP addressing": a private IPv4
address stays with an instance through stop and start and is released when it
is terminated; a released address can go to the next instance in the subnet.
moto keeps a terminated instance's address forever. This patch releases it
once the instance is visibly terminated (after `shutting-down`), and the
subnet hands released addresses out first, so reuse actually happens.

It patches moto in this process, so it works only with the embedded moto.
"""

from __future__ import annotations

import threading
import time
from typing import Any

_lock = threading.Lock()
_release_after: float | None = None
# (subnet, ip, when it may be handed out again)
_pending: list[tuple[Any, str, float]] = []


def install(release_after: float) -> None:
    """Turn reuse on: addresses come free `release_after` seconds after a terminate."""
    global _release_after
    from moto.ec2.models.instances import Instance
    from moto.ec2.models.subnets import Subnet

    with _lock:
        _release_after = release_after
    if getattr(Instance.terminate, "_cloudjhub_ipreuse", False):
        return
    terminate = Instance.terminate
    available = Subnet.get_available_subnet_ip

    def terminate_releasing(self: Instance) -> Any:
        was = self._state.name
        result = terminate(self)
        with _lock:
            if _release_after is not None and was != "terminated" and self.subnet_id:
                subnet = self.ec2_backend.get_subnet(self.subnet_id)
                due = time.monotonic() + _release_after
                _pending.extend((subnet, ip, due) for ip in self._private_ips)
        return result

    def available_reusing(self: Subnet, instance: Any) -> str:
        with _lock:
            now = time.monotonic()
            for entry in [e for e in _pending if e[0] is self and e[2] <= now]:
                _pending.remove(entry)
                self.del_subnet_ip(entry[1])  # moto's own pool of unused addresses
        return available(self, instance)

    terminate_releasing._cloudjhub_ipreuse = True  # type: ignore[attr-defined]
    Instance.terminate = terminate_releasing  # type: ignore[method-assign]
    Subnet.get_available_subnet_ip = available_reusing  # type: ignore[method-assign]


def uninstall() -> None:
    """Back to moto's behaviour (the patch stays, inert)."""
    global _release_after
    with _lock:
        _release_after = None
        _pending.clear()
