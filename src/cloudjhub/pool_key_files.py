"""Which recorded host keys the pool's keeper drops, asking EC2 as little as it can.

A claim drops the pool tag, so a claimed worker leaves the keeper's listing yet still
runs (it may be given back, or read by a spawn): its keys stay until EC2 reports it
terminated or unknown. Asking about every such worker every round would cost one
DescribeInstances per 200 of them per round for as long as their users run. So an
unlisted id EC2 once showed live (claimed, or a member someone untagged by hand) is
settled, and settled ids are asked about again only every KEYS_RECHECK seconds, all in
one go. In memory only: a restarted keeper settles nothing and checks every id once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .aws.client import CloudError
from .aws.hub import HubEc2
from .warm_pool import KEYS_RECHECK

log = logging.getLogger("cloudjhub.warm_pool")


@dataclass
class KeyFiles:
    """The keeper's memory of which recorded ids need no asking this round."""

    recheck: float = KEYS_RECHECK
    _settled: set[str] = field(default_factory=set)
    _next_recheck: float = float("-inf")

    def forget(
        self, ec2: HubEc2, keys_dir: str, live: set[str], listed: set[str], now: float
    ) -> list[str]:
        """Drop the keys of workers terminated (or no longer known to EC2); return
        their ids. `listed`/`live`: the round's pool listing and its live ids. Unlisted
        ids not settled (just left the pool), or all of them when a re-check is due,
        are asked about by id; if EC2 cannot answer, none of the unlisted is dropped."""
        if not keys_dir or not Path(keys_dir).is_dir():
            return []
        files = {p.stem: p for p in Path(keys_dir).glob("i-*.keys")}
        unlisted = {i for i in files if i not in listed}
        self._settled &= unlisted  # back in the pool, or its file gone: unsettled
        # Due, or the (wall) clock was set back past the last re-check.
        due = now >= self._next_recheck or now < self._next_recheck - self.recheck
        asked = [i for i in files if i in unlisted and (due or i not in self._settled)]
        try:
            found = ec2.describe(asked) if asked else []
        except CloudError as exc:
            log.warning("cannot check pool workers before forgetting their keys: %s", exc)
            found, kept = [], unlisted
        else:
            kept = (unlisted - set(asked)) | {i.id for i in found if i.live}
            self._settled = (self._settled - set(asked)) | {i.id for i in found if i.live}
            if due:
                self._next_recheck = now + self.recheck
        dropped = [i for i in files if i not in live and i not in kept]
        for instance_id in dropped:
            files[instance_id].unlink(missing_ok=True)
        return dropped
