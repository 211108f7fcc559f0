"""How long JupyterHub's database work for a login holds its event loop, by journal mode.

    .venv/bin/python benchmarks/hub_db_commits.py [--logins N] [--dir DIR]

JupyterHub commits synchronously on its event loop. For each of N logins this does
what JupyterHub's own code does to the database on a first login and spawn, through
its ORM (`jupyterhub.orm`), with the session JupyterHub would build from the hub's
config: the user (one commit), the server and the spawner's state (one), its API
token (one), its OAuth client (one), the state once ready (one). It
times every commit, for SQLite's default rollback journal (the hub before
hub/database.py) and for the hub's `db_kwargs` (WAL, synchronous=NORMAL), the two
interleaved in rounds so both see the same machine load. No ports, no processes.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyterhub import orm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cloudjhub.hub.database import db_kwargs  # after the path is set


def login(db: Any, name: str, times: list[float]) -> None:
    def commit() -> None:
        started = time.perf_counter()
        db.commit()
        times.append(time.perf_counter() - started)

    user = orm.User(name=name)
    db.add(user)
    commit()
    spawner = orm.Spawner(user=user, name="", state={"instance_id": "i-0123456789abcdef0"})
    spawner.server = orm.Server()
    db.add(spawner)
    commit()
    token = orm.APIToken(user=user, note="server at /user/" + name, client_id="jupyterhub")
    token.token = secrets.token_hex(16)
    db.add(token)
    commit()
    client = orm.OAuthClient(identifier=f"jupyterhub-user-{name}", secret="s" * 32)
    db.add(client)
    commit()
    spawner.state = {**spawner.state, "host_keys": {"keys": ["ssh-ed25519 AAAA"]}}
    commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sessions, times = {}, {}
        for mode in ("default journal", "hub's db_kwargs (WAL)"):
            url = f"sqlite:///{tmp}/{len(sessions)}.sqlite"
            kwargs = db_kwargs(url) if "WAL" in mode else {}
            sessions[mode] = db = orm.new_session_factory(url, **kwargs)()
            db.add(orm.OAuthClient(identifier="jupyterhub"))  # JupyterHub makes it at start
            db.commit()
            times[mode] = []
        for n in range(args.logins):
            for mode, db in sessions.items():
                login(db, f"student{n:03d}", times[mode])
        print(f"{args.logins} logins, 5 commits each (JupyterHub's ORM), on {tmp}")
        for mode, spent in times.items():
            spent.sort()
            print(
                f"{mode:24s} per commit: median {statistics.median(spent) * 1e3:6.2f} ms, "
                f"p95 {spent[int(len(spent) * 0.95)] * 1e3:6.2f} ms, "
                f"max {spent[-1] * 1e3:6.2f} ms; loop held per login "
                f"{sum(spent) / args.logins * 1e3:6.1f} ms, all logins {sum(spent):5.2f} s"
            )


if __name__ == "__main__":
    main()
