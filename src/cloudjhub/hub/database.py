"""The hub's SQLite database with commits that do not wait for the disk.

JupyterHub talks to its database synchronously on its event loop (its database
docs say so), and a login commits several times: the user, the server, its API
token, its OAuth client, the spawner's state when ready. With SQLite's default
rollback journal each commit waits for two fsyncs: 17-30 ms on the demo machine
under load, and in the N=300 storm profile JupyterHub's commits were 43-50% of the
loop's busy time, the loop stalling for seconds (benchmarks/results/
2026-11-30-looplag-profile.txt). In WAL mode with synchronous=NORMAL a commit is an
append to the log, which is synced at checkpoints: a crashed or killed hub loses
nothing, a power loss at most the last commits and never the database's
integrity (sqlite.org/wal.html, sqlite.org/pragma.html#pragma_synchronous); EC2's
tags stay the truth of who has which instance.

Set through JupyterHub's own `db_kwargs` (SQLAlchemy's `connect_args`: Python's
sqlite3 builds every connection with this factory), so it holds on a manager as
in the demo, and only for a file: other databases are left as configured.
"""

from __future__ import annotations

import sqlite3
from typing import Any

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
# A WAL database is these files together; losing or replacing it means all of them.
WAL_SUFFIXES = ("", "-wal", "-shm")


class WalConnection(sqlite3.Connection):
    """A sqlite3 connection in WAL mode with synchronous=NORMAL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for pragma in PRAGMAS:
            self.execute(pragma)


def db_kwargs(db_url: str) -> dict[str, Any]:
    """JupyterHub's `db_kwargs` for `db_url`: WAL for an SQLite file, else nothing.

    JupyterHub's own default connect_args for SQLite (`check_same_thread`) are kept,
    since giving connect_args replaces them."""
    if not db_url.startswith("sqlite") or db_url.endswith((":memory:", "sqlite://")):
        return {}
    return {"connect_args": {"check_same_thread": False, "factory": WalConnection}}
