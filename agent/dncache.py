"""Where to bind, remembered briefly: login name -> DN, so a sign-in costs one bind, not two.

Only the location is cached, never an answer: every sign-in still binds. A cached DN that has
gone stale (user renamed, moved or deleted) shows up as a failed bind, after which the caller
looks the user up again (see :meth:`agent.directory.LdapDirectory.verify`). Bounded in size and age.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from pta.expiring import ExpiringMap

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_TTL = 300.0
DEFAULT_SIZE = 10_000


class DnCache:
    """A thread-safe LRU map with a time to live; the event loop and worker threads share one."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        size: int = DEFAULT_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an empty cache holding at most ``size`` names for ``ttl`` seconds each."""
        self._ttl = ttl
        self._clock = clock
        self._entries: ExpiringMap[str, str] = ExpiringMap(max(size, 0), clock=clock)
        self._lock = threading.Lock()

    def get(self, login: str) -> str | None:
        """Return the DN remembered for ``login``, if still fresh."""
        with self._lock:
            return self._entries.get(login, touch=True)

    def put(self, login: str, dn: str) -> None:
        """Remember ``dn`` for ``login``, forgetting the least recently used beyond the bound."""
        with self._lock:
            self._entries.put(login, dn, expires=self._clock() + self._ttl)

    def forget(self, login: str) -> None:
        """Drop ``login`` (its DN may be stale)."""
        with self._lock:
            self._entries.pop(login)

    def __len__(self) -> int:
        """How many names are remembered (some may have expired)."""
        return len(self._entries)
