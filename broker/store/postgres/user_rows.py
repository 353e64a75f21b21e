"""One batch's rows: the users' locks, counters, flights and refused passwords, read and written.

The SQL of :mod:`broker.store.postgres.user_batches`, apart from its queue and threads. A
batch reads in three statements after BEGIN (the locks of every distinct user in key order,
then their counters and flights, then their refused passwords' digests: statements after the
locks, so their snapshots see what the previous holders committed) and writes what its works
changed as at most six statements of arrays (``unnest``), whatever the batch's size. A batch
of one user keeps plain parameters, which are cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from broker.policy.lockout import CLEAN, Counter
from broker.store.records import CounterKind, Flight, Location, Refused, UserLockout

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg
    from psycopg.rows import TupleRow

_LOCK = (
    "SELECT pg_advisory_xact_lock(a, b) FROM (SELECT DISTINCT hashtext(t) AS a, hashtext(u) AS b"
    " FROM unnest(%s::text[], %s::text[]) AS k(t, u) ORDER BY a, b OFFSET 0) AS ordered"
)
_READ = (
    "WITH k AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS k(t, u))"
    " SELECT tenant, user_key, location, failures, lockouts, locked_until, last_failure, NULL"
    " FROM lockouts JOIN k ON tenant = k.t AND user_key = k.u UNION ALL"
    " SELECT tenant, user_key, location, NULL, NULL, NULL, expires_at, id"
    " FROM flights JOIN k ON tenant = k.t AND user_key = k.u"
)
_LOCK_ONE = "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))"
_READ_ONE = (
    "SELECT tenant, user_key, location, failures, lockouts, locked_until, last_failure, NULL"
    " FROM lockouts WHERE tenant = %s AND user_key = %s UNION ALL"
    " SELECT tenant, user_key, location, NULL, NULL, NULL, expires_at, id"
    " FROM flights WHERE tenant = %s AND user_key = %s"
)
_REPEATS = (
    "SELECT tenant, user_key, digest, known, expires_at FROM repeats"
    " JOIN unnest(%s::text[], %s::text[]) AS k(t, u) ON tenant = k.t AND user_key = k.u"
)
_REPEATS_ONE = (
    "SELECT tenant, user_key, digest, known, expires_at FROM repeats"
    " WHERE tenant = %s AND user_key = %s"
)
_DELETE_COUNTERS = (
    "DELETE FROM lockouts WHERE (tenant, user_key, location) IN"
    " (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
)
_SAVE_COUNTERS = (
    "INSERT INTO lockouts (tenant, user_key, location, failures, lockouts, locked_until,"
    " last_failure) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[],"
    " %s::int[], %s::float8[], %s::float8[])"
    " ON CONFLICT (tenant, user_key, location) DO UPDATE SET failures = excluded.failures,"
    " lockouts = excluded.lockouts, locked_until = excluded.locked_until,"
    " last_failure = excluded.last_failure"
)
_DELETE_REPEATS = (
    "DELETE FROM repeats WHERE (tenant, user_key, digest) IN"
    " (SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[]))"
)
_SAVE_REPEATS = (
    "INSERT INTO repeats (tenant, user_key, digest, known, expires_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bool[], %s::float8[])"
    " ON CONFLICT (tenant, user_key, digest) DO UPDATE SET known = excluded.known,"
    " expires_at = excluded.expires_at"
)
_DELETE_FLIGHT = "DELETE FROM flights WHERE id = %s"
_ADD_FLIGHT = (
    "INSERT INTO flights (id, tenant, user_key, location, expires_at) VALUES (%s, %s, %s, %s, %s)"
)
_DELETE_FLIGHTS = "DELETE FROM flights WHERE id = ANY(%s::text[])"
_ADD_FLIGHTS = (
    "INSERT INTO flights (id, tenant, user_key, location, expires_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[])"
)

Key = tuple[str, str]


@dataclass(slots=True)
class Found:
    """One user's rows as read: what the writes are compared with."""

    counters: dict[CounterKind, Counter] = field(default_factory=dict)
    flights: dict[str, Flight] = field(default_factory=dict)
    repeats: dict[bytes, Refused] = field(default_factory=dict)


def read_users(conn: psycopg.Connection[TupleRow], keys: Sequence[Key]) -> dict[Key, Found]:
    """Lock every user of ``keys`` (in key order), then read their rows (pipelined)."""
    if len(keys) == 1:  # The common case at low load: plain parameters are cheaper.
        conn.execute(_LOCK_ONE, keys[0])
        rows = conn.execute(_READ_ONE, keys[0] * 2)
        refused = conn.execute(_REPEATS_ONE, keys[0])
    else:
        tenants, users = [k[0] for k in keys], [k[1] for k in keys]
        conn.execute(_LOCK, (tenants, users))
        rows = conn.execute(_READ, (tenants, users))
        refused = conn.execute(_REPEATS, (tenants, users))
    return _rows(keys, rows.fetchall(), refused.fetchall())


def _rows(
    keys: Sequence[Key], rows: Sequence[TupleRow], refused: Sequence[TupleRow]
) -> dict[Key, Found]:
    """The rows of the three tables, by user (a user with none has an empty entry)."""
    found = {key: Found() for key in keys}
    for tenant, user, location, failures, lockouts, until, last, flight_id in rows:
        entry = found[(tenant, user)]
        if flight_id is None:
            kind = cast("CounterKind", location)
            entry.counters[kind] = Counter(failures, lockouts, until, last)
        else:
            entry.flights[flight_id] = Flight(cast("Location", location), last)
    for tenant, user, digest, known, expires_at in refused:
        found[(tenant, user)].repeats[bytes(digest)] = Refused(bool(known), expires_at)
    return found


def write_users(
    conn: psycopg.Connection[TupleRow], found: dict[Key, Found], states: dict[Key, UserLockout]
) -> None:
    """What the works changed, as at most six statements whatever the batch's size."""
    gone: list[tuple[str, str, str]] = []
    saved: list[tuple[str, str, str, int, int, float, float]] = []
    landed: list[str] = []
    added: list[tuple[str, str, str, str, float]] = []
    forgotten: list[tuple[str, str, bytes]] = []
    refused: list[tuple[str, str, bytes, bool, float]] = []
    for (tenant, user), state in states.items():
        before = found[(tenant, user)]
        forgotten.extend((tenant, user, d) for d in before.repeats.keys() - state.repeats.keys())
        refused.extend(
            (tenant, user, digest, entry.known, entry.expires_at)
            for digest, entry in state.repeats.items()
            if before.repeats.get(digest) != entry
        )
        for kind in before.counters.keys() | state.counters.keys():
            after = state.counters.get(kind, CLEAN)
            if after == before.counters.get(kind, CLEAN):
                continue
            if after.clean:
                gone.append((tenant, user, kind))
            else:
                saved.append(
                    (
                        tenant,
                        user,
                        kind,
                        after.failures,
                        after.lockouts,
                        after.locked_until,
                        after.last_failure,
                    )
                )
        landed.extend(before.flights.keys() - state.flights.keys())
        added.extend(
            (flight_id, tenant, user, flight.location, flight.expires_at)
            for flight_id, flight in state.flights.items()
            if flight_id not in before.flights
        )
    if gone:
        conn.execute(_DELETE_COUNTERS, _columns(gone, 3))
    if saved:
        conn.execute(_SAVE_COUNTERS, _columns(saved, 7))
    _write_flights(conn, landed, added)
    if forgotten:
        conn.execute(_DELETE_REPEATS, _columns(forgotten, 3))
    if refused:
        conn.execute(_SAVE_REPEATS, _columns(refused, 5))


def _write_flights(
    conn: psycopg.Connection[TupleRow],
    landed: list[str],
    added: list[tuple[str, str, str, str, float]],
) -> None:
    """Flights landed and added; one (each decision's usual change) as plain parameters."""
    if len(landed) == 1:
        conn.execute(_DELETE_FLIGHT, landed)
    elif landed:
        conn.execute(_DELETE_FLIGHTS, (landed,))
    if len(added) == 1:
        conn.execute(_ADD_FLIGHT, added[0])
    elif added:
        conn.execute(_ADD_FLIGHTS, _columns(added, 5))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the arrays ``unnest`` turns back into rows."""
    return [[row[i] for row in rows] for i in range(width)]
