"""Where configurable-http-proxy, which the hub starts, lives on this machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def find_proxy() -> str:
    """configurable-http-proxy from PATH or this checkout's node_modules."""
    for candidate in (
        os.environ.get("CLOUDJHUB_PROXY_COMMAND"),
        shutil.which("configurable-http-proxy"),
        str(REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "configurable-http-proxy not found: run `npm install` in the cloudjhub checkout "
        "or `npm install -g configurable-http-proxy`"
    )
