"""The passwords lately refused per user, shared by the brokers of one store.

A client spread over brokers by round robin may type the same wrong password at two of them:
that is still one guess, at the broker's lockout and at the directory's, as at one broker
(:mod:`broker.policy.recent_failures` says why). So brokers sharing a store keep this memory
in it. What is kept is a 16-byte HMAC-SHA256 of (user, password) under a key that changes
every ``ttl`` seconds, derived from the cluster's CA key (which the store never sees), with a
wall-clock expiry; upkeep deletes expired entries. A store dump alone cannot test a single
guess against them, and after ``ttl`` nobody can.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING

from broker.policy.recent_failures import DEFAULT_TTL, DIGEST_BYTES, PER_USER, Repeat

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.store.policy_store import PolicyStore


class SharedRecentFailures:
    """A :class:`~broker.policy.recent_failures.RepeatMemory` in the shared store."""

    def __init__(
        self,
        store: PolicyStore,
        key: bytes,
        *,
        ttl: float = DEFAULT_TTL,
        per_user: int = PER_USER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep digests in ``store`` under keys derived from ``key`` (never stored)."""
        self._store = store
        self._key = key
        self._ttl = ttl
        self._per_user = per_user
        self._clock = clock

    def _digest(self, period: int, user: str, password: str) -> bytes:
        period_key = hmac.new(self._key, period.to_bytes(8, "big"), hashlib.sha256).digest()
        message = user.encode() + b"\0" + password.encode()
        return hmac.new(period_key, message, hashlib.sha256).digest()[:DIGEST_BYTES]

    def check(self, user: str, password: str) -> tuple[Repeat, bytes]:
        """Whether ``password`` was refused for ``user`` within ``ttl``, at any broker."""
        now = self._clock()
        period = int(now // self._ttl)
        current = self._digest(period, user, password)
        tenant, _, account = user.partition("\0")
        entries = self._store.repeats(tenant, account, now)
        if not entries:
            return Repeat.NO, current
        candidates = (current, self._digest(period - 1, user, password))
        for digest, known in entries:
            if any(hmac.compare_digest(digest, c) for c in candidates):
                return (Repeat.REFUSED if known else Repeat.UNKNOWN_NAME), current
        return Repeat.NO, current

    def add(self, user: str, digest: bytes, *, known: bool = True) -> None:
        """Remember a refused password for ``ttl`` (the user's newest few are kept)."""
        tenant, _, account = user.partition("\0")
        expires = self._clock() + self._ttl
        self._store.add_repeat(
            tenant, account, digest, known=known, expires_at=expires, keep=self._per_user
        )

    def forget(self, user: str) -> None:
        """Forget a user's refused passwords, everywhere."""
        tenant, _, account = user.partition("\0")
        self._store.forget_repeats(tenant, account)

    def forget_tenant(self, tenant: str) -> None:
        """Forget every refused password of a tenant's users, everywhere."""
        self._store.forget_repeats(tenant)
