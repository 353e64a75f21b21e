"""What every table of the broker's SQLite store shares: how its file is opened and written.

The serving broker and the CLI are separate processes writing one file, so a write of several
statements takes the lock up front (``BEGIN IMMEDIATE``) rather than failing half-way.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create, 0600) the store's database in autocommit mode."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # WAL with NORMAL survives a crash of the process (not of the machine) without an fsync per
    # commit: lockout counters are written on the sign-in path.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA foreign_keys=ON")
    path.chmod(0o600)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Run the body in an immediate transaction: the CLI and the server may write at once."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
