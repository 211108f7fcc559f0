"""The local cloud's guardian: ends what the demo started, however the demo ends.

A demo killed with SIGKILL runs no handler, and what it started (the hub, the
proxy, each emulated machine's sshd, Jupyter servers and kernels) would outlive
it and answer the next demo on the same addresses. So the demo starts this small
process with a pipe on its stdin that it never writes to. When the demo's process
is gone, however it went, the kernel closes the pipe; the guardian reads EOF and
ends by pid everything that carries one of its markers, then every process of
every emulated machine (`processes.fleet_pids`). After a clean stop it finds nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import processes, sshd
from .machine_share import remove_share, share_path


def sweep(state_dir: Path, markers: list[str]) -> int:
    """End the marked processes first (the hub, which would start servers), then the
    fleet; return how many processes were ended."""
    ended = 0
    for marker in markers:
        pids = sshd.with_descendants(sshd.instance_pids(marker))
        sshd.end_pids(pids)
        ended += len(pids)
    pids = processes.fleet_pids(state_dir)
    sshd.end_pids(pids)
    remove_share(share_path(state_dir))
    return ended + len(pids)


class Guardian:
    """The demo's side: start the guardian, and let it go when the demo stops."""

    def __init__(self, state_dir: Path, markers: list[str]) -> None:
        self.state_dir = state_dir
        self.markers = markers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.state_dir / "guardian.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self.state_dir), *self.markers],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Not in the terminal's process group: Ctrl-C is for the demo.
                start_new_session=True,
            )

    def stop(self, timeout: float = 60.0) -> None:
        """Close the pipe (as the demo's death would) and wait for the sweep."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def main(argv: list[str]) -> None:
    state_dir, markers = Path(argv[0]), argv[1:]
    sys.stdin.buffer.read()  # returns at EOF: the demo is gone
    ended = sweep(state_dir, markers)
    print(f"cloudjhub guardian: the demo ended; {ended} leftover process(es) ended", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
