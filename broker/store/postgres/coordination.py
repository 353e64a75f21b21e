"""What brokers sharing the store decide together: counters and flights, challenges, repeats.

Each is an operation of the store rather than of any broker's memory (see
:mod:`broker.policy.lockout_ledger`, :mod:`broker.policy.shared_challenges`,
:mod:`broker.policy.shared_repeats`). A user's lockout
decision runs under a transaction-scoped advisory lock on the user (two ``hashtext`` halves:
a collision only serialises two users' decisions), in a transaction shared with the decisions
of other users queued at the same moment (:mod:`~broker.store.postgres.user_batches`). The
other operations are
one statement each (a conditional ``UPDATE … RETURNING`` takes a challenge's try), or a small
transaction. None of these tables bumps ``changes``: they are written on the sign-in path, and
every broker reads them at each decision rather than caching them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from broker.store.records import Challenge, Location, UserLockout

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from broker.store.postgres.db import Database
    from broker.store.postgres.user_batches import UserBatches

_T = TypeVar("_T")

_CHALLENGE = "tenant, user_key, subject, address, location, request_id, expires_at, attempts_left"


class CoordinationTables:
    """The operations, on the database of the store that mixes this in."""

    _db: Database
    batches: UserBatches

    def with_user(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """Run ``work`` on one user's counters and flights under the user's advisory lock.

        Decisions queued at the same moment share one transaction
        (:mod:`~broker.store.postgres.user_batches`).
        """
        return self.batches.run(tenant, user, work)

    def submit_with_user(
        self, tenant: str, user: str, work: Callable[[UserLockout], _T]
    ) -> concurrent.futures.Future[_T]:
        """:meth:`with_user`, decided by the batches' own thread: its future."""
        return self.batches.submit(tenant, user, work)

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

    def forget_repeats(self, tenant: str, user: str | None = None) -> None:
        """Forget a user's refused passwords, or a tenant's."""
        self._db.run(
            "DELETE FROM repeats WHERE tenant = %s AND (%s::text IS NULL OR user_key = %s)",
            (tenant, user, user),
        )

    def forget_repeats_before(self, now: float) -> None:
        """Delete expired digests."""
        self._db.run("DELETE FROM repeats WHERE expires_at <= %s", (now,))
