"""A jupyter_server extension that makes "activity" mean a person or a kernel at work.

- A kernel that is computing counts: jupyter_server notices kernel activity
  only when a kernel sends messages, so a long silent computation would look
  idle and be culled mid-run. A `*_last_activity` setting (which jupyter_server
  folds into the activity it reports to the hub) follows "a kernel is busy".
- An open but untouched browser tab does not: JupyterLab polls the API (kernels,
  sessions, contents) with GETs forever, and each poll would otherwise reset the
  idle clock and keep an abandoned instance running. Only API requests that
  change something (saving, creating, renaming, starting a kernel) count, besides
  kernel and terminal activity, which jupyter_server tracks itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tornado.ioloop import PeriodicCallback

SETTING = "cloudjhub_busy_kernel_last_activity"
CHECK_SECONDS = 5.0


def busy_kernels(kernel_manager: Any) -> int:
    return sum(
        1
        for kernel_id in kernel_manager.list_kernel_ids()
        if getattr(kernel_manager.get_kernel(kernel_id), "execution_state", "") == "busy"
    )


READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _ignore_read_only_requests() -> None:
    from jupyter_server.base.handlers import APIHandler

    original = APIHandler.update_api_activity
    if getattr(original, "_cloudjhub", False):
        return

    def update_api_activity(self: APIHandler) -> None:
        if self.request.method not in READ_ONLY_METHODS:
            original(self)

    update_api_activity._cloudjhub = True  # type: ignore[attr-defined]
    APIHandler.update_api_activity = update_api_activity  # type: ignore[method-assign]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cloudjhub.worker.activity"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    _ignore_read_only_requests()
    settings = serverapp.web_app.settings
    settings[SETTING] = settings.get("started") or datetime.now(UTC)

    def check() -> None:
        if busy_kernels(serverapp.kernel_manager):
            settings[SETTING] = datetime.now(UTC)

    callback = PeriodicCallback(check, CHECK_SECONDS * 1000)
    callback.start()
    settings["cloudjhub_busy_kernel_callback"] = callback
