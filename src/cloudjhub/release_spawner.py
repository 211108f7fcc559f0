"""The spawner's side of `cloudjhub release`: stage the published releases on a worker.

Before each `cloudjhub-worker start` it asks the agent which releases it holds and sends
the missing ones over the same SSH channel; the start request then names them, and the
agent copies them into the user's home. A release that cannot be staged is logged and
left out: the user still gets their server.
"""

from __future__ import annotations

import json
from pathlib import Path

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from . import remote
from .releases import RELEASES_DIR, published
from .worker.protocol import ReleaseRef

STAGE_TIMEOUT = 300.0


class ReleaseSpawnerMixin(LoggingConfigurable):
    """`c.InstanceSpawner.releases_dir`, and staging its releases on a worker."""

    releases_dir = Unicode(
        RELEASES_DIR,
        help="Directory `cloudjhub release` writes releases to; each is copied into every "
        "user's home (~/<name>) at their next start, never overwriting a file. Empty: none.",
    ).tag(config=True)

    def stage_releases(self, target: remote.Target, worker_command: list[str]) -> list[ReleaseRef]:
        """The releases the worker holds once this returns; Unreachable is raised."""
        if not self.releases_dir:
            return []
        wanted = published(Path(self.releases_dir))
        if not wanted:
            return []
        listing = remote.run_on(target, [*worker_command, "releases"])
        try:
            held = json.loads(listing.stdout) if listing.status == 0 else {}
        except ValueError:
            held = {}
        if not isinstance(held, dict):
            held = {}
        refs: list[ReleaseRef] = []
        for release in wanted:
            if held.get(release.name) != release.sha256:
                try:
                    data = release.tarball.read_bytes()
                except OSError as exc:
                    self.log.warning("release %s not sent: %s", release.name, exc)
                    continue
                argv = [*worker_command, "stage-release", "--name", release.name]
                result = remote.run_on(target, argv, data, STAGE_TIMEOUT)
                if result.status != 0:
                    self.log.warning(
                        "release %s not staged on %s: %s",
                        release.name,
                        target.host,
                        result.stderr.strip()[-300:],
                    )
                    continue
            refs.append(ReleaseRef(name=release.name, sha256=release.sha256))
        return refs
