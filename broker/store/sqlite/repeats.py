"""The passwords lately refused, as keyed digests, in SQLite (for the contract tests' sake).

One broker on SQLite keeps this memory in its process only
(:class:`broker.policy.recent_failures.RecentFailures`); these functions keep the promise a
shared store keeps (:mod:`broker.policy.shared_repeats`), so both are held to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


def forget_repeats(db: sqlite3.Connection, tenant: str, user: str | None) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.forget_repeats`."""
    if user is None:
        db.execute("DELETE FROM repeats WHERE tenant = ?", (tenant,))
    else:
        db.execute("DELETE FROM repeats WHERE tenant = ? AND user = ?", (tenant, user))


def forget_repeats_before(db: sqlite3.Connection, now: float) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.forget_repeats_before`."""
    db.execute("DELETE FROM repeats WHERE expires_at <= ?", (now,))
