"""Open MFA challenges in SQLite: kept by the hash of their id, spent one try at a time.

With SQLite one broker serves the store and keeps its challenges in memory
(:class:`broker.policy.mfa.Challenges`); these tables keep the same promise a shared store
keeps (:class:`broker.policy.shared_challenges.SharedChallenges`), held to it by the
contract tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from broker.store.records import Challenge, Location

if TYPE_CHECKING:
    import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS mfa_challenges (
    key BLOB PRIMARY KEY,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    subject TEXT NOT NULL,
    address TEXT NOT NULL,
    location TEXT NOT NULL,
    request_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    attempts_left INTEGER NOT NULL
);
"""
_FIELDS = "tenant, user, subject, address, location, request_id, expires_at, attempts_left"
_OPEN = f"INSERT INTO mfa_challenges (key, {_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_SPEND = (
    "UPDATE mfa_challenges SET attempts_left = attempts_left - 1"  # noqa: S608 - constants only
    f" WHERE key = ? AND attempts_left > 0 AND expires_at > ? RETURNING {_FIELDS}"
)


def open_challenge(db: sqlite3.Connection, key: bytes, challenge: Challenge) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.open_challenge`."""
    db.execute(
        _OPEN,
        (
            key,
            challenge.tenant,
            challenge.user,
            challenge.subject,
            challenge.address,
            challenge.location,
            challenge.request_id,
            challenge.expires,
            challenge.attempts_left,
        ),
    )


def spend_challenge(db: sqlite3.Connection, key: bytes, now: float) -> Challenge | None:
    """See :meth:`broker.store.protocols.PolicyStore.spend_challenge`."""
    row = db.execute(_SPEND, (key, now)).fetchone()
    if row is None:
        return None
    tenant, user, subject, address, location, request_id, expires, left = row
    return Challenge(
        tenant=tenant,
        user=user,
        subject=subject,
        address=address,
        location=cast("Location", location),
        request_id=request_id,
        expires=expires,
        attempts_left=left,
    )


def close_challenge(db: sqlite3.Connection, key: bytes) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.close_challenge`."""
    db.execute("DELETE FROM mfa_challenges WHERE key = ?", (key,))


def forget_challenges_before(db: sqlite3.Connection, now: float) -> None:
    """See :meth:`broker.store.protocols.PolicyStore.forget_challenges_before`."""
    db.execute("DELETE FROM mfa_challenges WHERE expires_at <= ?", (now,))
