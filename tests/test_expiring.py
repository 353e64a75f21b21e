"""``pta/expiring.py``: the bounded map with expiry behind every short memory (pure, fake clock)."""

from __future__ import annotations

import pytest

from pta.expiring import ExpiringMap, Full


class Clock:
    """Time that moves only when told."""

    def __init__(self) -> None:
        """Start at 1000."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current time."""
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A fake clock."""
    return Clock()


class TestExpiry:
    """An entry lives until its own expiry, never after."""

    def test_get_before_and_after(self, clock: Clock) -> None:
        """Live until the expiry time; at it, gone (and dropped)."""
        entries: ExpiringMap[str, int] = ExpiringMap(10, clock=clock)
        entries.put("a", 1, expires=clock.now + 5)
        assert entries.get("a") == 1
        assert "a" in entries
        clock.now += 5
        assert "a" not in entries
        assert entries.get("a") is None
        assert len(entries) == 0

    def test_pop_of_an_expired_entry_says_none(self, clock: Clock) -> None:
        """Popping drops the entry; an expired one gives no value back."""
        entries: ExpiringMap[str, int] = ExpiringMap(10, clock=clock)
        entries.put("a", 1, expires=clock.now + 1)
        entries.put("b", 2, expires=clock.now + 9)
        clock.now += 2
        assert entries.pop("a") is None
        assert entries.pop("b") == 2
        assert len(entries) == 0

    def test_purge_drops_only_the_expired(self, clock: Clock) -> None:
        """Entries with their own lifetimes: purge takes exactly those past theirs."""
        entries: ExpiringMap[str, int] = ExpiringMap(None, clock=clock)
        for n, life in enumerate([5, 1, 9, 2]):
            entries.put(str(n), n, expires=clock.now + life)
        clock.now += 3
        assert entries.purge() == 2
        assert list(entries) == ["0", "2"]

    def test_replace_keeps_expiry_and_place(self, clock: Clock) -> None:
        """A new value for a held entry: same expiry, same place in line."""
        entries: ExpiringMap[str, int] = ExpiringMap(10, clock=clock)
        entries.put("a", 1, expires=clock.now + 5)
        entries.put("b", 2, expires=clock.now + 9)
        entries.replace("a", 10)
        entries.replace("missing", 3)
        assert list(entries) == ["a", "b"]
        clock.now += 5
        assert entries.get("a") is None
        assert entries.get("b") == 2


class TestBound:
    """Never more than ``capacity``; what goes first depends on the map."""

    def test_expired_go_before_live_ones(self, clock: Clock) -> None:
        """Full: the expired at the front make room, no live entry is lost."""
        entries: ExpiringMap[str, int] = ExpiringMap(3, clock=clock)
        entries.put("old", 0, expires=clock.now + 1)
        entries.put("a", 1, expires=clock.now + 10)
        entries.put("b", 2, expires=clock.now + 10)
        clock.now += 2
        entries.put("c", 3, expires=clock.now + 10)
        assert list(entries) == ["a", "b", "c"]

    def test_oldest_evicted_when_all_live(self, clock: Clock) -> None:
        """An evicting map drops the least recently put (or touched) entry."""
        entries: ExpiringMap[str, int] = ExpiringMap(2, clock=clock)
        entries.put("a", 1, expires=clock.now + 10)
        entries.put("b", 2, expires=clock.now + 10)
        assert entries.get("a", touch=True) == 1  # Used: now the newest.
        entries.put("c", 3, expires=clock.now + 10)
        assert list(entries) == ["a", "c"]
        assert len(entries) == 2

    def test_put_again_moves_to_newest(self, clock: Clock) -> None:
        """Putting a held key replaces it as the newest entry."""
        entries: ExpiringMap[str, int] = ExpiringMap(2, clock=clock)
        entries.put("a", 1, expires=clock.now + 10)
        entries.put("b", 2, expires=clock.now + 10)
        entries.put("a", 3, expires=clock.now + 10)
        entries.put("c", 4, expires=clock.now + 10)
        assert list(entries) == ["a", "c"]
        assert entries.get("a") == 3

    def test_a_map_that_must_not_evict_refuses(self, clock: Clock) -> None:
        """Live entries are never dropped: a new one is refused, until one expires."""
        entries: ExpiringMap[str, int] = ExpiringMap(2, evict=False, clock=clock)
        entries.put("a", 1, expires=clock.now + 5)
        entries.put("b", 2, expires=clock.now + 10)
        with pytest.raises(Full):
            entries.put("c", 3, expires=clock.now + 10)
        assert list(entries) == ["a", "b"]
        clock.now += 5
        entries.put("c", 3, expires=clock.now + 10)
        assert list(entries) == ["b", "c"]

    def test_zero_capacity_holds_nothing(self, clock: Clock) -> None:
        """A cache sized 0 is off."""
        entries: ExpiringMap[str, int] = ExpiringMap(0, clock=clock)
        entries.put("a", 1, expires=clock.now + 5)
        assert entries.get("a") is None
        assert len(entries) == 0

    def test_a_flood_stays_bounded(self, clock: Clock) -> None:
        """A hundred thousand distinct keys through a map of 1,000: 1,000 held, the newest."""
        entries: ExpiringMap[int, int] = ExpiringMap(1000, clock=clock)
        for n in range(100_000):
            entries.put(n, n, expires=clock.now + 60)
        assert len(entries) == 1000
        assert next(iter(entries)) == 99_000
