#!/usr/bin/env python3
"""launch_cluster/launch.py CLUSTER BASE_AMI PRIVATE_SUBNET PUBLIC_SUBNET [OPTIONS]

A thin shim over `cloudjhub launch`, kept for the original command line.
Run from a checkout, it uses the checkout's .venv when there is one.
"""

import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
VENV_PYTHON = CHECKOUT / ".venv" / "bin" / "python"

if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve():
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])  # noqa: S606

from cloudjhub.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["launch", *sys.argv[1:]], prog_name="launch_cluster/launch.py")
