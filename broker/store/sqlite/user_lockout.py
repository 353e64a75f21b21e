"""One user's lockout state under a lock: counters, checks in flight, repeats, in SQLite.

With SQLite one broker serves the store (its data dir is locked), and that broker keeps the
counters in memory (:class:`broker.policy.lockout_ledger.MemoryLedger`); this is the same
promise every shared store keeps, so the contract tests hold both to it, and a tool or test
may use the shared ledger on SQLite. ``BEGIN IMMEDIATE`` takes SQLite's one write lock, which
is coarser than a lock per user and just as correct.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from broker.policy.lockout import CLEAN, Counter
from broker.store.records import CounterKind, Flight, Location, Refused, UserLockout
from broker.store.sqlite.db import transaction

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

_T = TypeVar("_T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS flights (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    location TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS flights_by_user ON flights (tenant, user);
"""


def with_user(
    db: sqlite3.Connection, tenant: str, user: str, work: Callable[[UserLockout], _T]
) -> _T:
    """See :meth:`broker.store.protocols.PolicyStore.with_user`."""
    with transaction(db):
        counters = {
            cast("CounterKind", kind): Counter(*values)
            for kind, *values in db.execute(
                "SELECT location, failures, lockouts, locked_until, last_failure FROM lockouts"
                " WHERE tenant = ? AND user = ?",
                (tenant, user),
            )
        }
        flights = {
            flight_id: Flight(cast("Location", location), expires_at)
            for flight_id, location, expires_at in db.execute(
                "SELECT id, location, expires_at FROM flights WHERE tenant = ? AND user = ?",
                (tenant, user),
            )
        }
        repeats = {
            digest: Refused(bool(known), expires_at)
            for digest, known, expires_at in db.execute(
                "SELECT digest, known, expires_at FROM repeats WHERE tenant = ? AND user = ?",
                (tenant, user),
            )
        }
        state = UserLockout(dict(counters), dict(flights), dict(repeats))
        result = work(state)
        for kind in counters.keys() | state.counters.keys():
            after = state.counters.get(kind, CLEAN)
            if after == counters.get(kind, CLEAN):
                continue
            if after.clean:
                db.execute(
                    "DELETE FROM lockouts WHERE tenant = ? AND user = ? AND location = ?",
                    (tenant, user, kind),
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO lockouts (tenant, user, location, failures, lockouts,"
                    " locked_until, last_failure) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (tenant, user, kind, *_values(after)),
                )
        gone = flights.keys() - state.flights.keys()
        db.executemany("DELETE FROM flights WHERE id = ?", [(f,) for f in gone])
        db.executemany(
            "INSERT INTO flights (id, tenant, user, location, expires_at) VALUES (?, ?, ?, ?, ?)",
            [
                (flight_id, tenant, user, flight.location, flight.expires_at)
                for flight_id, flight in state.flights.items()
                if flight_id not in flights
            ],
        )
        db.executemany(
            "DELETE FROM repeats WHERE tenant = ? AND user = ? AND digest = ?",
            [(tenant, user, d) for d in repeats.keys() - state.repeats.keys()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO repeats (tenant, user, digest, known, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (tenant, user, digest, entry.known, entry.expires_at)
                for digest, entry in state.repeats.items()
                if repeats.get(digest) != entry
            ],
        )
    return result


def _values(counter: Counter) -> tuple[int, int, float, float]:
    return counter.failures, counter.lockouts, counter.locked_until, counter.last_failure
