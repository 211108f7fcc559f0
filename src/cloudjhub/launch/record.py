"""What a launch reads back from its record of created resources
(`cloudjhub-CLUSTER-resources.json`, written by `Launch.write_record`) on a re-run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..host_keys import valid_keys

Say = Callable[[str], None]


def recorded_pins(path: Path, cluster: str, say: Say) -> dict[str, tuple[str, ...]]:
    """The host keys an earlier run of this cluster recorded, by instance id.

    Anything unreadable or malformed is left out with a line saying so: the keys
    are then learned again, from the console or known_hosts, as on a first run."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        say(f"{path}: not read ({exc}); host keys are learned again")
        return {}
    if not isinstance(record, dict) or record.get("cluster") != cluster:
        return {}
    found = record.get("host_keys")
    pins: dict[str, tuple[str, ...]] = {}
    for instance_id, keys in (found if isinstance(found, dict) else {}).items():
        good = valid_keys(keys) if isinstance(keys, list) else None
        if good and isinstance(instance_id, str) and instance_id.startswith("i-"):
            pins[instance_id] = tuple(good)
        else:
            say(f"{path}: host keys of {instance_id!r} are malformed; learned again")
    return pins
