"""The last few wrong passwords of each user, as keyed hashes that live only in memory.

A user who types the same wrong password twice has not made two guesses, and must not move
twice toward a lockout: not the broker's, and not the directory's either, where every bind
with a wrong password counts. So a repeat of a password that was just refused is answered
INVALID_CREDENTIALS by the broker, without reaching an agent, for ``ttl`` seconds (then, or
after any success of the user, it is checked by the directory again).

Nothing that could recover a password is kept: an entry is HMAC-SHA256 under a random key
that exists only in this process and is replaced every ``ttl`` seconds (the previous key is
kept one more period, so entries live their full ``ttl``). Nothing is ever written to disk.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

#: How long a refused password is remembered.
DEFAULT_TTL = 900.0
#: Wrong passwords remembered per user (Entra keeps three).
PER_USER = 4
#: Users remembered; the least recently failing are forgotten first.
MAX_USERS = 100_000
DIGEST_BYTES = 16


class RecentFailures:
    """Keyed hashes of recently refused passwords, per user key, in bounded memory."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        per_user: int = PER_USER,
        max_users: int = MAX_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start empty, with a fresh key."""
        self._ttl = ttl
        self._per_user = per_user
        self._max_users = max_users
        self._clock = clock
        self._keys: list[bytes] = [secrets.token_bytes(32)]
        self._rotated = clock()
        #: user key -> [(digest, expires)], newest last.
        self._entries: OrderedDict[str, list[tuple[bytes, float]]] = OrderedDict()

    def __len__(self) -> int:
        """How many users have a remembered failure."""
        return len(self._entries)

    def _rotate(self, now: float) -> None:
        if now - self._rotated >= self._ttl:
            self._keys = [secrets.token_bytes(32), self._keys[0]]
            self._rotated = now

    def _digest(self, key: bytes, user: str, password: str) -> bytes:
        message = user.encode() + b"\0" + password.encode()
        return hmac.new(key, message, hashlib.sha256).digest()[:DIGEST_BYTES]

    def check(self, user: str, password: str) -> tuple[bool, bytes]:
        """Whether ``password`` was refused for ``user`` within ``ttl``, and its digest.

        The digest is what :meth:`add` takes if the directory refuses the password now, so
        the password itself need not be kept until the directory has answered.
        """
        now = self._clock()
        self._rotate(now)
        current = self._digest(self._keys[0], user, password)
        entries = self._entries.get(user)
        if not entries:  # The usual case: one HMAC, none under the previous key.
            return False, current
        digests = [current, *(self._digest(key, user, password) for key in self._keys[1:])]
        live = [(d, exp) for d, exp in entries if exp > now]
        if live:
            self._entries[user] = live
        else:
            del self._entries[user]
        seen = any(hmac.compare_digest(d, c) for d, _ in live for c in digests)
        return seen, digests[0]

    def add(self, user: str, digest: bytes) -> None:
        """Remember a refused password of ``user`` by the digest :meth:`check` gave."""
        now = self._clock()
        entries = self._entries.pop(user, [])
        entries.append((digest, now + self._ttl))
        self._entries[user] = entries[-self._per_user :]
        while len(self._entries) > self._max_users:
            self._entries.popitem(last=False)

    def forget(self, user: str) -> None:
        """Forget a user's refused passwords (after a success, or an administrator's unlock)."""
        self._entries.pop(user, None)
