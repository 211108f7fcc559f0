"""Where the OS install scripts put cloudjhub on a manager or a worker image.

`launch/scripts/install-*.sh` default `CLOUDJHUB_PREFIX` to INSTALL_PREFIX (a
unit test holds them to it); the launcher and the spawner run the commands
found in INSTALL_BIN. Imports nothing of ours.
"""

from __future__ import annotations

INSTALL_PREFIX = "/opt/cloudjhub"
INSTALL_BIN = f"{INSTALL_PREFIX}/venv/bin"
