"""What brokers sharing a store decide together, kept in SQLite too: the same promises.

One broker on SQLite decides these in its own memory (lockout counters in flight, MFA
challenges, refused passwords); the tables here keep the promises a shared store keeps, so
the contract tests hold every backend to them, and a shared ledger can run on SQLite.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, TypeVar

from broker.store.sqlite import challenges, repeats, user_lockout

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from broker.store.records import Challenge, UserLockout

_T = TypeVar("_T")


class CoordinationTables:
    """The tables' operations, on the connection of the store that mixes this in."""

    _db: sqlite3.Connection

    def _create_coordination_tables(self) -> None:
        for schema in (user_lockout.SCHEMA, challenges.SCHEMA, repeats.SCHEMA):
            self._db.executescript(schema)

    def with_user(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """Run ``work`` on one user's lockout state under SQLite's write lock."""
        return user_lockout.with_user(self._db, tenant, user, work)

    def submit_with_user(
        self, tenant: str, user: str, work: Callable[[UserLockout], _T]
    ) -> concurrent.futures.Future[_T]:
        """:meth:`with_user` now, on the caller's thread (the handle is that thread's)."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        try:
            future.set_result(self.with_user(tenant, user, work))
        except Exception as error:  # noqa: BLE001 - the caller's, handed to it
            future.set_exception(error)
        return future

    # Open MFA challenges (the serving broker keeps its own in memory) ---------------------

    def open_challenge(self, key: bytes, challenge: Challenge) -> None:
        """Keep an open challenge by the hash of its id."""
        challenges.open_challenge(self._db, key, challenge)

    def spend_challenge(self, key: bytes, now: float) -> Challenge | None:
        """Take one try of an open challenge."""
        return challenges.spend_challenge(self._db, key, now)

    def close_challenge(self, key: bytes) -> None:
        """Delete a challenge."""
        challenges.close_challenge(self._db, key)

    def forget_challenges_before(self, now: float) -> None:
        """Delete expired challenges."""
        challenges.forget_challenges_before(self._db, now)

    # Refused passwords' digests (the serving broker keeps its own in memory) ---------------

    def forget_repeats(self, tenant: str, user: str | None = None) -> None:
        """Forget refused passwords."""
        repeats.forget_repeats(self._db, tenant, user)

    def forget_repeats_before(self, now: float) -> None:
        """Delete expired digests."""
        repeats.forget_repeats_before(self._db, now)
