"""What a spawn has done so far, for JupyterHub's progress API (the spawn page).

`start()` writes events as it goes; `progress()` reads them as they come, the way
fargatespawner feeds its progress from an async queue. Percentages only go up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any


class SpawnProgress:
    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self.events: list[dict[str, Any]] = []
        self.done = False
        self._changed = asyncio.Event()

    def restart(self) -> None:
        """A new spawn: forget the last one's events."""
        self.events, self.done = [], False

    def emit(self, percent: int, message: str) -> None:
        last = self.events[-1]["progress"] if self.events else 0
        self.events.append({"progress": max(last, percent), "message": message})
        self._log(message)
        self._wake()

    def finish(self) -> None:
        """The spawn ended (either way): readers get what is left, then stop."""
        self.done = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self.done:
                return
            await changed.wait()
