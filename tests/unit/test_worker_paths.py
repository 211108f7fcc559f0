"""Where the agent keeps things: a real instance at /, an emulated one anywhere else."""

from __future__ import annotations

from pathlib import Path

from cloudjhub.worker.paths import Layout


def test_layout_defaults() -> None:
    real = Layout.from_env({})
    assert real.root == Path("/") and not real.emulated
    emulated = Layout.from_env({"CLOUDJHUB_WORKER_ROOT": "/srv/instances/i-1"})
    assert emulated.emulated
    assert emulated.volumes_dir == Path("/srv/instances/volumes")
