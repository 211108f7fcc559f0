"""A jupyter_server extension: a kernel that is computing counts as activity.

jupyter_server reports kernel activity only when a kernel sends messages, so
a long silent computation would look idle and be culled mid-run. This adds a
`*_last_activity` setting (which jupyter_server folds into the activity it
reports to the hub) that follows "some kernel is busy right now".
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


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cloudjhub.worker.activity"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    settings = serverapp.web_app.settings
    settings[SETTING] = settings.get("started") or datetime.now(UTC)

    def check() -> None:
        if busy_kernels(serverapp.kernel_manager):
            settings[SETTING] = datetime.now(UTC)

    callback = PeriodicCallback(check, CHECK_SECONDS * 1000)
    callback.start()
    settings["cloudjhub_busy_kernel_callback"] = callback
