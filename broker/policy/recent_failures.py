"""The last few wrong passwords of each user, as keyed hashes that live only in memory.

A user who types the same wrong password twice has not made two guesses, and must not move
twice toward a lockout: not the broker's, and not the directory's either, where every bind
with a wrong password counts. So a repeat of a password that was just refused is answered
INVALID_CREDENTIALS by the broker, without reaching an agent, for ``ttl`` seconds (then, or
after any success of the user, it is checked by the directory again).

A refusal for a name the directory does not know (``UNKNOWN_USER``) is remembered apart: a
repeat of it is not counted either (so counts say nothing of whether a name exists), but it is
checked by the directory again rather than refused here. A directory that answered "no such
user" may have been misconfigured (a base DN with a typo); once fixed, that user's right
password must get through at once.

Nothing that could recover a password is kept: an entry is HMAC-SHA256 under a random key
that exists only in this process and is replaced every ``ttl`` seconds (the previous key is
kept one more period, so entries live their full ``ttl``). Nothing is ever written to disk.
Brokers sharing a store share this memory there instead
(:mod:`broker.policy.shared_repeats`); either is a :class:`RepeatMemory`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Protocol

from pta.expiring import ExpiringMap

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.store.records import UserLockout

#: How long a refused password is remembered.
DEFAULT_TTL = 900.0
#: Wrong passwords remembered per user (Entra keeps three).
PER_USER = 4
#: Users remembered; the least recently failing are forgotten first.
MAX_USERS = 100_000
DIGEST_BYTES = 16


class Repeat(enum.IntEnum):
    """What :meth:`RecentFailures.check` found; falsy when the password is not a repeat."""

    NO = 0
    #: Refused for an account the directory knows: answer it here, uncounted.
    REFUSED = 1
    #: Refused as an unknown name: check it again, but do not count it again.
    UNKNOWN_NAME = 2


class RepeatMemory(Protocol):
    r"""The passwords lately refused per user key (``tenant\0user``), as keyed hashes.

    The ``*_in`` methods run inside a lockout decision, under the user's lock, with the
    user's state: a memory shared through the store keeps its entries there (so a repeat and
    its count are one step), one in memory ignores it.
    """

    def digests(self, user: str, password: str) -> tuple[bytes, ...]:
        """The password's digests under the keys in use, the current key's first.

        Taken before the user's lock, so that no decision waits with the password itself;
        the first is what :meth:`add_in` remembers if the directory refuses it.
        """

    def check_in(self, state: UserLockout, user: str, digests: tuple[bytes, ...]) -> Repeat:
        """Whether a password (by its :meth:`digests`) was refused for ``user`` lately, and how."""

    def add_in(self, state: UserLockout, user: str, digest: bytes, *, known: bool = True) -> None:
        """Remember a refused password by the digest :meth:`check_in` gave."""

    def forget_in(self, state: UserLockout, user: str) -> None:
        """Forget a user's refused passwords (a right password was just taken)."""

    def forget(self, user: str) -> None:
        """Forget a user's refused passwords, outside any decision (an unlock)."""

    def forget_tenant(self, tenant: str) -> None:
        """Forget every refused password of a tenant's users."""


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
        self._clock = clock
        self._keys: list[bytes] = [secrets.token_bytes(32)]
        self._rotated = clock()
        #: user key -> [(digest, expires, the directory knew the name)], newest last; a user's
        #: entry lives as long as their newest failure, the least recently failing go first.
        self._entries: ExpiringMap[str, list[tuple[bytes, float, bool]]] = ExpiringMap(
            max_users, clock=clock
        )

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

    def check(self, user: str, password: str) -> tuple[Repeat, bytes]:
        """Whether ``password`` was refused for ``user`` within ``ttl`` (and how), its digest.

        The digest is what :meth:`add` takes if the directory refuses the password now, so
        the password itself need not be kept until the directory has answered.
        """
        digests = self.digests(user, password)
        return self._seen(user, digests), digests[0]

    def digests(self, user: str, password: str) -> tuple[bytes, ...]:
        """The password's digest under the current key, and under the previous one.

        The previous key's only when ``user`` has entries: the usual case, none, costs one
        HMAC.
        """
        self._rotate(self._clock())
        keys = self._keys if self._entries.get(user) else self._keys[:1]
        return tuple(self._digest(key, user, password) for key in keys)

    def _seen(self, user: str, digests: tuple[bytes, ...]) -> Repeat:
        entries = self._entries.get(user)
        if not entries:
            return Repeat.NO
        now = self._clock()
        live = [entry for entry in entries if entry[1] > now]
        if live:
            self._entries.replace(user, live)
        else:
            self._entries.pop(user)
        for digest, _, known in live:
            if any(hmac.compare_digest(digest, c) for c in digests):
                return Repeat.REFUSED if known else Repeat.UNKNOWN_NAME
        return Repeat.NO

    def add(self, user: str, digest: bytes, *, known: bool = True) -> None:
        """Remember a refused password of ``user`` by the digest :meth:`check` gave.

        ``known``: the directory refused it for an account it has (not "no such user").
        """
        now = self._clock()
        # The same password refused again (now for a known account) replaces what was said.
        held = self._entries.pop(user) or []
        entries = [e for e in held if not hmac.compare_digest(e[0], digest)]
        entries.append((digest, now + self._ttl, known))
        self._entries.put(user, entries[-self._per_user :], expires=now + self._ttl)

    def forget_tenant(self, tenant: str) -> None:
        """Forget every refused password of a tenant's users (its directories changed)."""
        prefix = f"{tenant}\0"
        for user in [u for u in self._entries if u.startswith(prefix)]:
            self._entries.pop(user)

    def forget(self, user: str) -> None:
        """Forget a user's refused passwords (after a success, or an administrator's unlock)."""
        self._entries.pop(user)

    def check_in(self, state: UserLockout, user: str, digests: tuple[bytes, ...]) -> Repeat:
        """As :meth:`check`: the entries are this process's, not the state's."""
        del state
        return self._seen(user, digests)

    def add_in(self, state: UserLockout, user: str, digest: bytes, *, known: bool = True) -> None:
        """:meth:`add`."""
        del state
        self.add(user, digest, known=known)

    def forget_in(self, state: UserLockout, user: str) -> None:
        """:meth:`forget`."""
        del state
        self.forget(user)
