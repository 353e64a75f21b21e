"""Open MFA challenges in the store several brokers share: begun at one, completed at any.

A client spread over brokers by round robin sends ``CompleteMfa`` wherever its channel picks,
so the challenge its ``SignIn`` opened must be there. The store keeps each challenge under
the SHA-256 of its id (the id is a bearer secret, and a store dump must not hand out open
challenges), with a wall-clock expiry; a try is taken atomically, so the tries a challenge
allows are allowed across the cluster, not per broker.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING

from broker.policy.mfa import CHALLENGE_ID_BYTES, DEFAULT_CHALLENGE_ATTEMPTS, DEFAULT_CHALLENGE_TTL
from broker.store.records import Challenge

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.store.policy_store import PolicyStore
    from broker.store.records import Location


def _key(challenge_id: str) -> bytes:
    return hashlib.sha256(challenge_id.encode()).digest()


class SharedChallenges:
    """A :class:`~broker.policy.mfa.ChallengeBook` in the shared store."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        ttl: float = DEFAULT_CHALLENGE_TTL,
        attempts: int = DEFAULT_CHALLENGE_ATTEMPTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep challenges in ``store``; ``clock`` is wall-clock time (every broker's)."""
        self.ttl = ttl
        self._store = store
        self._attempts = attempts
        self._clock = clock

    def open(  # noqa: PLR0913 - the challenge's fields, by name
        self,
        *,
        tenant: str,
        user: str,
        subject: str,
        address: str,
        location: Location,
        request_id: str,
    ) -> str:
        """Open a challenge and return its id (a bearer secret: never log it)."""
        challenge_id = secrets.token_urlsafe(CHALLENGE_ID_BYTES)
        challenge = Challenge(
            tenant=tenant,
            user=user,
            subject=subject,
            address=address,
            location=location,
            request_id=request_id,
            expires=self._clock() + self.ttl,
            attempts_left=self._attempts,
        )
        self._store.open_challenge(_key(challenge_id), challenge)
        return challenge_id

    def spend(self, challenge_id: str) -> Challenge | None:
        """Take one try, at whichever broker (see :meth:`ChallengeBook.spend`)."""
        return self._store.spend_challenge(_key(challenge_id), self._clock())

    def close(self, challenge_id: str) -> None:
        """Close a challenge everywhere."""
        self._store.close_challenge(_key(challenge_id))

    def upkeep(self) -> None:
        """Delete the expired challenges (every broker may; it is idempotent)."""
        self._store.forget_challenges_before(self._clock())
