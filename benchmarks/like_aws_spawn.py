"""Time to a ready server under `--like-aws --time-scale 1`, beside the default local cloud.

Runs `cloudjhub demo` twice on this machine, once as it is by default (moto's
instant states) and once with AWS-like state durations, console and throttling,
and for each measures, through the hub's REST API, the seconds from the
spawn request to a ready server for a first spawn (launch) and a restart (start
of the stopped instance), then prints them side by side.

    .venv/bin/python benchmarks/like_aws_spawn.py

It takes a few minutes: AWS-like delays are tens of seconds.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.system.conftest import launch_demo  # after the path is set

VPC_CIDR = "127.207.0.0/16"


def measure(extra: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="cloudjhub-bench-") as tmp:
        demo = launch_demo(Path(tmp), 3600, VPC_CIDR, *extra)
        try:
            first = demo.start("bench")
            demo.stop("bench")
            demo.wait_state("bench", "stopped", timeout=180)
            restart = demo.start("bench")
            demo.stop("bench")
            return first, restart
        finally:
            demo.proc.send_signal(signal.SIGTERM)
            demo.proc.wait(timeout=120)


def main() -> None:
    began = time.monotonic()
    rows = {
        "default local cloud": measure([]),
        "--like-aws --time-scale 1": measure(["--like-aws", "--time-scale", "1"]),
    }
    print(f"{'':28} {'first spawn':>12} {'restart':>10}")
    for name, (first, restart) in rows.items():
        print(f"{name:28} {first:11.1f}s {restart:9.1f}s")
    base, like = rows["default local cloud"], rows["--like-aws --time-scale 1"]
    print(f"{'ratio':28} {like[0] / base[0]:11.1f}x {like[1] / base[1]:9.1f}x")
    print(f"(measured in {time.monotonic() - began:.0f}s)")


if __name__ == "__main__":
    main()
