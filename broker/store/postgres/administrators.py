"""Where the shared store keeps administrator certificates (AdminService callers).

The rules are the SQLite store's (:mod:`broker.store.sqlite.administrators`). Every broker of
the cluster reads this table on each admin call, so a revocation any of them (or the CLI)
records holds everywhere from the next call on.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from broker.store import rows

if TYPE_CHECKING:
    from broker.store.postgres.db import Database
    from broker.store.records import AdministratorRecord


class PostgresAdministratorStore:
    """The administrators table, through the pool :class:`~.store.PostgresStore` opened."""

    def __init__(self, db: Database) -> None:
        """Use ``db``; the schema is there already."""
        self._db = db

    def add(self, *, name: str, serial: str, not_after: float) -> None:
        """Record a certificate issued to ``name``."""
        self._db.run(
            "INSERT INTO administrators (serial, name, issued_at, not_after)"
            " VALUES (%s, %s, %s, %s)",
            (serial, name, time.time(), not_after),
        )

    def certificate(self, serial: str) -> AdministratorRecord | None:
        """The record of the certificate with ``serial``, if one was issued."""
        row = self._db.row(
            "SELECT name, serial, issued_at, not_after, revoked_at"
            " FROM administrators WHERE serial = %s",
            (serial,),
        )
        return None if row is None else rows.administrator(row)

    def revoke(self, name: str) -> int:
        """Revoke every certificate of ``name``; how many were usable before."""
        return self._db.run(
            "UPDATE administrators SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL",
            (time.time(), name),
        )

    def list(self) -> list[AdministratorRecord]:
        """Every administrator certificate, by name then issue time."""
        found = self._db.rows(
            "SELECT name, serial, issued_at, not_after, revoked_at"
            " FROM administrators ORDER BY name, issued_at"
        )
        return [rows.administrator(row) for row in found]
