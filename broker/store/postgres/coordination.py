"""What brokers sharing the store decide together: counters and flights, challenges, repeats.

Each is an operation of the store rather than of any broker's memory (see
:mod:`broker.policy.lockout_ledger`, :mod:`broker.policy.shared_challenges`,
:mod:`broker.policy.shared_repeats`). A user's lockout
decision runs under a transaction-scoped advisory lock on the user (two ``hashtext`` halves:
a collision only serialises two users' decisions), in pipeline mode: BEGIN, the lock and one
read of both tables travel in one round trip, the writes and COMMIT in a second. (Each
statement costs the broker's CPU more than the server's: one read, not two, saved a third of
it.) The read is a statement after the lock's, so its snapshot is taken once the lock is held:
it sees what the previous holder committed. The other operations are
one statement each (a conditional ``UPDATE … RETURNING`` takes a challenge's try), or a small
transaction. None of these tables bumps ``changes``: they are written on the sign-in path, and
every broker reads them at each decision rather than caching them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from broker.policy.lockout import CLEAN, Counter
from broker.store.postgres.db import lock_pair
from broker.store.records import Challenge, CounterKind, Flight, Location, UserLockout

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.store.postgres.db import Database

_T = TypeVar("_T")

_CHALLENGE = "tenant, user_key, subject, address, location, request_id, expires_at, attempts_left"


class CoordinationTables:
    """The operations, on the database of the store that mixes this in."""

    _db: Database

    def with_user(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """Run ``work`` on one user's counters and flights under the user's advisory lock."""
        where = (tenant, user)
        with self._db.connection() as conn, conn.pipeline(), conn.transaction():
            lock_pair(conn, *where)
            rows = conn.execute(
                "SELECT location, failures, lockouts, locked_until, last_failure, NULL"
                " FROM lockouts WHERE tenant = %s AND user_key = %s UNION ALL"
                " SELECT location, NULL, NULL, NULL, expires_at, id"
                " FROM flights WHERE tenant = %s AND user_key = %s",
                (*where, *where),
            ).fetchall()
            counters: dict[CounterKind, Counter] = {}
            flights: dict[str, Flight] = {}
            for location, failures, lockouts, until, last, flight_id in rows:
                if flight_id is None:
                    counters[cast("CounterKind", location)] = Counter(
                        failures, lockouts, until, last
                    )
                else:
                    flights[flight_id] = Flight(cast("Location", location), last)
            state = UserLockout(dict(counters), dict(flights))
            result = work(state)
            for kind in counters.keys() | state.counters.keys():
                after = state.counters.get(kind, CLEAN)
                if after == counters.get(kind, CLEAN):
                    continue
                if after.clean:
                    conn.execute(
                        "DELETE FROM lockouts WHERE tenant = %s AND user_key = %s"
                        " AND location = %s",
                        (*where, kind),
                    )
                else:
                    conn.execute(
                        "INSERT INTO lockouts (tenant, user_key, location, failures, lockouts,"
                        " locked_until, last_failure) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (tenant, user_key, location) DO UPDATE SET"
                        " failures = excluded.failures, lockouts = excluded.lockouts,"
                        " locked_until = excluded.locked_until,"
                        " last_failure = excluded.last_failure",
                        (
                            *where,
                            kind,
                            after.failures,
                            after.lockouts,
                            after.locked_until,
                            after.last_failure,
                        ),
                    )
            for flight_id in flights.keys() - state.flights.keys():
                conn.execute("DELETE FROM flights WHERE id = %s", (flight_id,))
            for flight_id, flight in state.flights.items():
                if flight_id not in flights:
                    conn.execute(
                        "INSERT INTO flights (id, tenant, user_key, location, expires_at)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (flight_id, *where, flight.location, flight.expires_at),
                    )
        return result

    # Open MFA challenges ----------------------------------------------------------------------

    def open_challenge(self, key: bytes, challenge: Challenge) -> None:
        """Keep an open challenge by the hash of its id."""
        self._db.run(
            "INSERT INTO mfa_challenges (key, tenant, user_key, subject, address, location,"
            " request_id, expires_at, attempts_left) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
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

    def spend_challenge(self, key: bytes, now: float) -> Challenge | None:
        """Take one try, in one conditional UPDATE (a racing one re-reads the row after)."""
        row = self._db.row(
            "UPDATE mfa_challenges SET attempts_left = attempts_left - 1"
            " WHERE key = %s AND attempts_left > 0 AND expires_at > %s RETURNING"
            " tenant, user_key, subject, address, location, request_id, expires_at,"
            " attempts_left",
            (key, now),
        )
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

    def close_challenge(self, key: bytes) -> None:
        """Delete a challenge."""
        self._db.run("DELETE FROM mfa_challenges WHERE key = %s", (key,))

    def forget_challenges_before(self, now: float) -> None:
        """Delete expired challenges."""
        self._db.run("DELETE FROM mfa_challenges WHERE expires_at <= %s", (now,))

    # Refused passwords' digests ---------------------------------------------------------------

    def repeats(self, tenant: str, user: str, now: float) -> list[tuple[bytes, bool]]:
        """A user's unexpired refused-password digests."""
        rows = self._db.rows(
            "SELECT digest, known FROM repeats"
            " WHERE tenant = %s AND user_key = %s AND expires_at > %s",
            (tenant, user, now),
        )
        return [(bytes(digest), bool(known)) for digest, known in rows]

    def add_repeat(  # noqa: PLR0913 - one entry's fields
        self, tenant: str, user: str, digest: bytes, *, known: bool, expires_at: float, keep: int
    ) -> None:
        """Remember a refused password's digest; keep the user's newest few."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO repeats (tenant, user_key, digest, known, expires_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant, user_key, digest)"
                " DO UPDATE SET known = excluded.known, expires_at = excluded.expires_at",
                (tenant, user, digest, known, expires_at),
            )
            conn.execute(
                "DELETE FROM repeats WHERE tenant = %s AND user_key = %s AND digest NOT IN"
                " (SELECT digest FROM repeats WHERE tenant = %s AND user_key = %s"
                " ORDER BY expires_at DESC LIMIT %s)",
                (tenant, user, tenant, user, keep),
            )

    def forget_repeats(self, tenant: str, user: str | None = None) -> None:
        """Forget a user's refused passwords, or a tenant's."""
        self._db.run(
            "DELETE FROM repeats WHERE tenant = %s AND (%s::text IS NULL OR user_key = %s)",
            (tenant, user, user),
        )

    def forget_repeats_before(self, now: float) -> None:
        """Delete expired digests."""
        self._db.run("DELETE FROM repeats WHERE expires_at <= %s", (now,))
