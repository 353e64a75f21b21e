"""The passwords lately refused, as keyed digests, in SQLite (for the contract tests' sake).

One broker on SQLite keeps this memory in its process only
(:class:`broker.policy.recent_failures.RecentFailures`); these functions keep the promise a
shared store keeps (:mod:`broker.policy.shared_repeats`), so both are held to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.store.sqlite.db import transaction

if TYPE_CHECKING:
    import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS repeats (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    digest BLOB NOT NULL,
    known INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant, user, digest)
);
"""


def repeats(db: sqlite3.Connection, tenant: str, user: str, now: float) -> list[tuple[bytes, bool]]:
    """See :meth:`broker.store.protocols.PolicyStore.repeats`."""
    rows = db.execute(
        "SELECT digest, known FROM repeats WHERE tenant = ? AND user = ? AND expires_at > ?",
        (tenant, user, now),
    )
    return [(digest, bool(known)) for digest, known in rows]


def add_repeat(  # noqa: PLR0913 - one entry's fields
    db: sqlite3.Connection,
    tenant: str,
    user: str,
    digest: bytes,
    *,
    known: bool,
    expires_at: float,
    keep: int,
) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.add_repeat`."""
    with transaction(db):
        db.execute(
            "INSERT OR REPLACE INTO repeats (tenant, user, digest, known, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (tenant, user, digest, known, expires_at),
        )
        db.execute(
            "DELETE FROM repeats WHERE tenant = ? AND user = ? AND digest NOT IN"
            " (SELECT digest FROM repeats WHERE tenant = ? AND user = ?"
            " ORDER BY expires_at DESC LIMIT ?)",
            (tenant, user, tenant, user, keep),
        )


def forget_repeats(db: sqlite3.Connection, tenant: str, user: str | None) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.forget_repeats`."""
    if user is None:
        db.execute("DELETE FROM repeats WHERE tenant = ?", (tenant,))
    else:
        db.execute("DELETE FROM repeats WHERE tenant = ? AND user = ?", (tenant, user))


def forget_repeats_before(db: sqlite3.Connection, now: float) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.forget_repeats_before`."""
    db.execute("DELETE FROM repeats WHERE expires_at <= ?", (now,))
