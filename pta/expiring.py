"""A map whose entries expire and whose size is bounded: the one every short memory uses.

The broker remembers refused passwords (as keyed hashes) and open MFA challenges for minutes;
the agent remembers where a login lives and which request ids it has acted on. Each must
forget on time (a stale entry is wrong, or a secret kept too long) and stay bounded (a flood
of names must not grow memory without end). What differs is what "full" means: a cache may
drop its least recently used entry, a replay guard must never drop one that has not expired.

Not thread-safe by itself: a user shared with threads holds its own lock around each call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_K = TypeVar("_K")
_V = TypeVar("_V")


class Full(Exception):
    """A map that never evicts live entries has no room for another."""


class ExpiringMap(Generic[_K, _V]):
    """Key -> value, each entry until its own expiry time, at most ``capacity`` of them.

    Entries are kept in the order they were last put (or touched): the first is the one to go
    when the map is full and may evict. Expired entries are dropped when met, and all at once
    when the map is full or :meth:`purge` is called.
    """

    def __init__(
        self,
        capacity: int | None,
        *,
        evict: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create an empty map.

        Args:
            capacity: The most entries held; None for no bound (then only expiry shrinks it).
            evict: When full after dropping the expired: drop the oldest (True), or refuse the
                new entry with :class:`Full` (False: for entries that must live their time).
            clock: The time expiries are measured against (tests pass a fake one).
        """
        self._capacity = capacity
        self._evict = evict
        self._clock = clock
        self._entries: OrderedDict[_K, tuple[float, _V]] = OrderedDict()

    def __len__(self) -> int:
        """How many entries are held (some may have expired and not been dropped yet)."""
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has an entry that has not expired."""
        entry = self._entries.get(key)  # type: ignore[arg-type]  # any object may be asked
        return entry is not None and entry[0] > self._clock()

    def __iter__(self) -> Iterator[_K]:
        """The keys held, oldest first (some may have expired)."""
        return iter(list(self._entries))

    def get(self, key: _K, *, touch: bool = False) -> _V | None:
        """The value of ``key`` if it has not expired (an expired entry is dropped).

        ``touch``: count this as a use, so the entry is the last to be evicted (an LRU cache).
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        if touch:
            self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: _K, value: _V, *, expires: float) -> None:
        """Hold ``value`` for ``key`` until ``expires`` (on the map's clock), as the newest.

        Raises:
            Full: When the map refuses to evict and every entry is still live.
        """
        self._entries.pop(key, None)
        if self._capacity == 0:  # A cache sized 0 is off.
            return
        if self._capacity is not None and len(self._entries) >= self._capacity:
            self._make_room(self._capacity)
        self._entries[key] = (expires, value)

    def _make_room(self, capacity: int) -> None:
        """Get below ``capacity``: the expired at the front first, then the oldest (or refuse).

        Entries put with one lifetime expire in the order they were put, so dropping expired
        ones from the front costs only what it drops, even under a flood of new keys.
        """
        now = self._clock()
        while self._entries and next(iter(self._entries.values()))[0] <= now:
            self._entries.popitem(last=False)
        if len(self._entries) < capacity:
            return
        if not self._evict:
            if self.purge() == 0:
                raise Full(f"{len(self._entries)} entries, none expired")
            return
        while len(self._entries) >= capacity:
            self._entries.popitem(last=False)

    def replace(self, key: _K, value: _V) -> None:
        """Change a held entry's value, keeping its expiry and its place (no-op if absent)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], value)

    def pop(self, key: _K) -> _V | None:
        """Drop ``key``'s entry; its value if it had one that had not expired."""
        entry = self._entries.pop(key, None)
        return None if entry is None or entry[0] <= self._clock() else entry[1]

    def purge(self) -> int:
        """Drop every expired entry; how many."""
        now = self._clock()
        expired = [key for key, (expires, _) in self._entries.items() if expires <= now]
        for key in expired:
            del self._entries[key]
        return len(expired)
