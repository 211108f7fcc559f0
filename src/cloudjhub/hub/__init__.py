"""The hub's configuration: one static `jupyterhub_config.py`, shipped in the package,
that applies a JSON settings file (`hub.json`) written by `cloudjhub setup-manager`
or `cloudjhub demo`. Nothing here writes Python source, so all of it is linted and
unit-tested without starting a hub.
"""

from __future__ import annotations

from pathlib import Path

# What JupyterHub loads with `-f`: the static module that reads the settings file.
CONFIG_FILE = Path(__file__).with_name("jupyterhub_config.py")
