"""What ``cloudjhub-worker start`` does, without click: the hub's one agent call on the
path of every login, so ``cli`` runs it without importing the other commands' parser.
"""

from __future__ import annotations

import sys

from .paths import Layout
from .protocol import read_request
from .server import start_server


def start_reply() -> str:
    """Read the request on stdin, start (or keep) the server: the reply's JSON."""
    layout = Layout.from_env()
    request = read_request(sys.stdin.buffer)
    return start_server(layout, request).to_json()
