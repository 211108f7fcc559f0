"""The demo's DLM on its own clock: the local engine run at the real time every
minute, so snapshots come on the policy's schedule as they would on AWS and a demo
user can try `cloudjhub backups` and `restore` by hand. Tests keep driving the
engine at an injected time instead (POST RUN_PATH)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)

# DLM's schedules are at most hourly (backup_schedule.MIN_INTERVAL_S): a minute's
# lateness is within what AWS allows itself ("within one hour of the scheduled time",
# DLM User Guide, "Automate snapshot lifecycles").
TICK_SECONDS = 60.0


class DlmClock:
    """Runs `engine_run(now)` every `interval` seconds on a daemon thread until stopped."""

    def __init__(
        self,
        engine_run: Callable[[datetime], list[str]],
        interval: float = TICK_SECONDS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine_run = engine_run
        self.interval = interval
        self.now = now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[str]:
        """One run at the current time; a failure is logged, the clock goes on."""
        try:
            taken = self.engine_run(self.now())
        except Exception:  # the demo's DLM must outlive one bad round
            log.exception("local DLM: a scheduled run failed")
            return []
        if taken:
            log.info("local DLM: took %s", ", ".join(taken))
        return taken

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="local-dlm-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
