"""Backups, restores, full and grown homes, on one demo with home volumes and a
backup schedule: DLM's engine (the local cloud's) at an injected clock, and the
admin's commands as an admin runs them, against the demo's endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from cloudjhub.local.dlm import RUN_PATH
from tests.system.conftest import CLI, Demo, running_demo

VPC_CIDR = "127.197.0.0/16"
GB = 1 << 30


def admin(demo: Demo, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": demo.endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": str(demo.state_dir / "aws-credentials"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return subprocess.run(
        [str(CLI), *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def run_dlm(demo: Demo, now: datetime) -> list[str]:
    """DLM's engine, run at `now` (the injected clock)."""
    reply = requests.post(
        demo.endpoint + RUN_PATH,
        json={"now": now.isoformat()},
        headers={"X-Cloudjhub-Key": demo.credentials()["aws_secret_access_key"]},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return list(reply.json()["SnapshotIds"])


def home_of(demo: Demo, user: str) -> dict[str, Any]:
    volumes = demo.ec2().describe_volumes(
        Filters=[
            {"Name": "tag:cloudjhub:user", "Values": [user]},
            {"Name": "tag:cloudjhub:role", "Values": ["home"]},
        ]
    )["Volumes"]
    live = [
        v
        for v in volumes
        if not {t["Key"] for t in v.get("Tags", [])}
        & {"cloudjhub:replaced", "cloudjhub:restored-folder"}
    ]
    (volume,) = live
    return volume


def spawn_failure(demo: Demo, user: str) -> str:
    """Start `user`'s server, expecting it to fail; the message the user is shown."""
    reply = demo.request("POST", f"/users/{user}/server")
    if reply.status_code == 500:  # failed within JupyterHub's slow_spawn_timeout
        return str(reply.json()["message"])
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 120
    while (server := demo.server(user)) is not None:
        assert not server.get("ready"), f"{user}'s server started"
        assert time.monotonic() < deadline
        time.sleep(0.3)
    return (demo.state_dir / "jupyterhub.log").read_text()


def test_backups_restores_full_and_grown_homes(tmp_path: Path) -> None:
    extra = ("--user-home-ebs-size", "1", "--backup-schedule", "0 * * * *", "--backup-retain", "2")
    with running_demo(tmp_path, 3600, VPC_CIDR, *extra) as demo:
        volumes = demo.state_dir / "volumes"
        demo.request("POST", "/users/alice")
        demo.start("alice")
        alice = home_of(demo, "alice")["VolumeId"]
        (volumes / alice / "essay.txt").write_text("my only draft\n")

        # Scheduled snapshots at an injected clock, and retention: 3 taken, 2 kept.
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        assert run_dlm(demo, hour + timedelta(minutes=30)) == []
        taken = [run_dlm(demo, hour + timedelta(hours=h, minutes=1)) for h in (1, 2, 3)]
        assert [len(t) for t in taken] == [1, 1, 1]
        listed = admin(demo, "backups", "demo", "alice", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        # Three taken within seconds of each other: the kept two are the newest.
        assert sorted(r["snapshot_id"] for r in rows) == sorted([taken[1][0], taken[2][0]])
        assert {r["volume_id"] for r in rows} == {alice}

        # A deleted file, brought back read-only with restore --as-folder.
        (volumes / alice / "essay.txt").unlink()
        bob_try = admin(demo, "restore", "demo", "bob", taken[2][0], "--as-folder")
        assert bob_try.returncode == 2 and "not a backup of bob" in bob_try.stderr
        done = admin(demo, "restore", "demo", "alice", taken[2][0], "--as-folder")
        assert done.returncode == 0, done.stderr
        demo.stop("alice")
        demo.start("alice")
        (folder,) = (volumes / alice).glob("restored-*")
        assert (folder / "essay.txt").read_text() == "my only draft\n"
        assert folder.stat().st_mode & 0o222 == 0

        # The home volume replaced from a snapshot; the old one kept, marked.
        (volumes / alice / "later.txt").write_text("after the backup\n")
        done = admin(demo, "restore", "demo", "alice", taken[1][0])
        assert done.returncode == 0, done.stderr
        demo.stop("alice")
        demo.start("alice")
        new = home_of(demo, "alice")["VolumeId"]
        assert new != alice
        assert (volumes / new / "essay.txt").read_text() == "my only draft\n"
        assert not (volumes / new / "later.txt").exists()
        old_tags = demo.ec2().describe_volumes(VolumeIds=[alice])["Volumes"][0]["Tags"]
        assert "cloudjhub:replaced" in {t["Key"] for t in old_tags}
        # The last session's restored folder: detached and deleted by this start.
        folders = demo.ec2().describe_volumes(
            Filters=[{"Name": "tag-key", "Values": ["cloudjhub:restored-folder"]}]
        )["Volumes"]
        assert folders == []

        # A full home fails the spawn in words; a resize takes effect at the next start.
        demo.request("POST", "/users/bob")
        demo.start("bob")
        demo.stop("bob")
        bob = home_of(demo, "bob")["VolumeId"]
        with open(volumes / bob / "huge.bin", "wb") as fh:
            fh.truncate(GB - (4 << 20))  # sparse: counted, not stored
        assert "Your home folder is full (1.0 of 1.0 GB used)" in spawn_failure(demo, "bob")
        smaller = admin(demo, "resize-home", "demo", "bob", "1")
        assert smaller.returncode == 2 and "only grow" in smaller.stderr
        grown = admin(demo, "resize-home", "demo", "bob", "3")
        assert grown.returncode == 0, grown.stderr
        demo.start("bob")
        assert (volumes / f"{bob}.grown").read_text() == "3\n"
        status = admin(demo, "status", "demo", "--json")
        rows = {r["user"]: r for r in json.loads(status.stdout)["instances"]}
        assert rows["bob"]["home_usage"]["size_bytes"] == 3 * GB
        assert rows["bob"]["home_usage"]["used_bytes"] >= GB - (4 << 20)
