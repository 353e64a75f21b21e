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
from broker.store.records import Refused

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.store.policy_store import PolicyStore
    from broker.store.records import UserLockout


class SharedRecentFailures:
    """A :class:`~broker.policy.recent_failures.RepeatMemory` in the shared store.

    Read and written inside the lockout decisions' transactions (the user's
    :class:`~broker.store.records.UserLockout` holds the entries): a check and a count, or an
    answer's repeat and its count, are one step at every broker, and cost no statement of
    their own.
    """

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
        #: The periods' keys in use (each derived once; replaced whole, never changed).
        self._period_keys: dict[int, bytes] = {}

    def _digest(self, period: int, user: str, password: str) -> bytes:
        held = self._period_keys
        if (period_key := held.get(period)) is None:
            period_key = hmac.new(self._key, period.to_bytes(8, "big"), hashlib.sha256).digest()
            self._period_keys = {p: k for p, k in held.items() if p >= period - 1}
            self._period_keys[period] = period_key
        message = user.encode() + b"\0" + password.encode()
        return hmac.new(period_key, message, hashlib.sha256).digest()[:DIGEST_BYTES]

    def digests(self, user: str, password: str) -> tuple[bytes, ...]:
        """The password's digests under this period's key and the previous one's."""
        period = int(self._clock() // self._ttl)
        return self._digest(period, user, password), self._digest(period - 1, user, password)

    def check_in(self, state: UserLockout, user: str, digests: tuple[bytes, ...]) -> Repeat:
        """Whether a password was refused for ``user`` within ``ttl``, at any broker."""
        del user  # The state is the user's.
        now = self._clock()
        for digest, entry in state.repeats.items():
            if entry.expires_at > now and any(hmac.compare_digest(digest, c) for c in digests):
                return Repeat.REFUSED if entry.known else Repeat.UNKNOWN_NAME
        return Repeat.NO

    def add_in(self, state: UserLockout, user: str, digest: bytes, *, known: bool = True) -> None:
        """Remember a refused password for ``ttl``; the user's newest few are kept."""
        del user  # The state is the user's.
        now = self._clock()
        state.repeats[digest] = Refused(known, now + self._ttl)
        live = sorted(
            (item for item in state.repeats.items() if item[1].expires_at > now),
            key=lambda item: item[1].expires_at,
        )
        kept = {d for d, _ in live[-self._per_user :]}
        for old in state.repeats.keys() - kept:
            del state.repeats[old]

    def forget_in(self, state: UserLockout, user: str) -> None:
        """Forget a user's refused passwords (a right password was just taken)."""
        del user
        state.repeats.clear()

    def forget(self, user: str) -> None:
        """Forget a user's refused passwords, everywhere."""
        tenant, _, account = user.partition("\0")
        self._store.forget_repeats(tenant, account)

    def forget_tenant(self, tenant: str) -> None:
        """Forget every refused password of a tenant's users, everywhere."""
        self._store.forget_repeats(tenant)
