"""The local cloud's own log (`emulator.log` in the demo's state dir).

The fleet emulator and the AWS behaviour layer run inside the demo's process,
which has no log of its own: without this file, what they did in a long run
(which machine booted or halted when, which one failed to) is lost.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOG_NAME = "emulator.log"
# Every logger under cloudjhub.local: the emulator, the like-AWS layer, moto's wrapper.
LOGGER = "cloudjhub.local"
FORMAT = "[%(levelname).1s %(asctime)s %(name)s] %(message)s"


class LocalCloudLog:
    """INFO and above of the local cloud, appended to `state_dir/emulator.log` (0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOG_NAME
        self._handler: logging.Handler | None = None
        self._level = logging.NOTSET

    def open(self) -> None:
        if self._handler is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
        handler = logging.FileHandler(self.path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger = logging.getLogger(LOGGER)
        self._level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        self._handler = handler

    def close(self) -> None:
        if self._handler is None:
            return
        logger = logging.getLogger(LOGGER)
        logger.removeHandler(self._handler)
        logger.setLevel(self._level)
        self._handler.close()
        self._handler = None
