"""Where the broker's SQLite store keeps administrator certificates (AdminService callers).

One row per certificate issued by ``pta-broker admin issue``; a revocation marks every row of
the name. Only public facts: the serial, the name, the dates.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from broker.store import rows

if TYPE_CHECKING:
    import sqlite3

    from broker.store.records import AdministratorRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS administrators (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    issued_at REAL NOT NULL,
    not_after REAL NOT NULL,
    revoked_at REAL
);
"""


class SqliteAdministratorStore:
    """The administrators table, on the connection :class:`~.store.SqliteStore` opened."""

    def __init__(self, db: sqlite3.Connection) -> None:
        """Create the table if needed (a store made before administrators existed)."""
        self._db = db
        db.executescript(SCHEMA)

    def add(self, *, name: str, serial: str, not_after: float) -> None:
        """Record a certificate issued to ``name``."""
        self._db.execute(
            "INSERT INTO administrators (serial, name, issued_at, not_after) VALUES (?, ?, ?, ?)",
            (serial, name, time.time(), not_after),
        )

    def certificate(self, serial: str) -> AdministratorRecord | None:
        """The record of the certificate with ``serial``, if one was issued."""
        row = self._db.execute(
            "SELECT name, serial, issued_at, not_after, revoked_at"
            " FROM administrators WHERE serial = ?",
            (serial,),
        ).fetchone()
        return None if row is None else rows.administrator(row)

    def revoke(self, name: str) -> int:
        """Revoke every certificate of ``name``; how many were usable before."""
        return self._db.execute(
            "UPDATE administrators SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (time.time(), name),
        ).rowcount

    def list(self) -> list[AdministratorRecord]:
        """Every administrator certificate, by name then issue time."""
        found = self._db.execute(
            "SELECT name, serial, issued_at, not_after, revoked_at"
            " FROM administrators ORDER BY name, issued_at"
        )
        return [rows.administrator(row) for row in found]
