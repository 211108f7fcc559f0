"""Releases on an instance: staged by the hub, then copied into a home at a start.

The hub sends each release once per instance (``stage-release``, a tarball on stdin)
and names the ones to deliver in the start request by digest. A release reaches a home
once per digest (recorded root-only), so a file a student deleted comes back only with a
new release; existing files are never overwritten. Unpacking runs as the user.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .contract import SHA256_RE, AgentError
from .paths import Layout, write_private
from .unpack import ReleaseError, check_members, unpack_missing

if TYPE_CHECKING:  # types only: `releases`, asked before every start, needs no pydantic
    from .accounts import RunAs
    from .protocol import StartRequest

# A course folder is a few MB; more is a mistake, or someone filling the disk.
MAX_RELEASE_BYTES = 512 * 1024 * 1024
CHUNK = 1024 * 1024


def staged(layout: Layout) -> dict[str, str]:
    """Releases staged on this instance: name to sha256."""
    found: dict[str, str] = {}
    if not layout.releases_dir.is_dir():
        return found
    for sidecar in layout.releases_dir.glob("*.sha256"):
        digest = sidecar.read_text().strip()
        name = sidecar.name.removesuffix(".sha256")
        if SHA256_RE.fullmatch(digest) and (layout.releases_dir / f"{name}.tar.gz").is_file():
            found[name] = digest
    return found


def stage(layout: Layout, name: str, stream: IO[bytes]) -> str:
    """Keep the tarball on stdin as release `name`, once checked; its sha256."""
    layout.releases_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(dir=layout.releases_dir, delete=False) as tmp:
        try:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > MAX_RELEASE_BYTES:
                    raise AgentError(f"release {name}: more than {MAX_RELEASE_BYTES} bytes", 2)
                digest.update(chunk)
                tmp.write(chunk)
            tmp.flush()
            with open(tmp.name, "rb") as check:
                check_members(check)
        except ReleaseError as exc:
            os.unlink(tmp.name)
            raise AgentError(f"release {name}: {exc}", 2) from None
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, layout.releases_dir / f"{name}.tar.gz")
    write_private(layout.releases_dir / f"{name}.sha256", digest.hexdigest() + "\n")
    return digest.hexdigest()


def deliver(layout: Layout, request: StartRequest, run_as: RunAs) -> list[str]:
    """Copy the request's staged releases into the home; the names delivered now."""
    if not request.releases:
        return []
    have = staged(layout)
    record = layout.delivered_file(request.user)
    done = _read_delivered(record)
    delivered: list[str] = []
    for ref in request.releases:
        if have.get(ref.name) != ref.sha256 or done.get(ref.name) == ref.sha256:
            continue
        with open(layout.releases_dir / f"{ref.name}.tar.gz", "rb") as tarball:
            _unpack_as(run_as, tarball, run_as.home / ref.name)
        done[ref.name] = ref.sha256
        delivered.append(ref.name)
    if delivered:
        write_private(record, json.dumps(done))
    return delivered


def _read_delivered(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _unpack_as(run_as: RunAs, tarball: IO[bytes], dest: Path) -> None:
    """Unpack as the user on an instance; in the emulator, as ourselves."""
    try:
        if run_as.uid is None:
            unpack_missing(tarball, dest)
            return
    except (ReleaseError, OSError) as exc:
        raise AgentError(f"release {dest.name} not delivered: {exc}") from None
    proc = subprocess.run(
        [sys.executable, "-m", "cloudjhub.worker.unpack", str(dest)],
        stdin=tarball,
        capture_output=True,
        text=True,
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=[],
        env={"HOME": str(run_as.home), "PATH": "/usr/bin:/bin"},
        cwd=run_as.home,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no error output"])[-1][:300]
        raise AgentError(f"release {dest.name} not delivered: {detail}")
