"""Smart lockout arithmetic: when wrong passwords lock a user, and for how long.

Pure functions over plain values with the clock passed in, so each rule is tested directly.
The broker keeps one :class:`Counter` per user *and kind of location* (familiar networks and
everywhere else apart), so someone guessing from elsewhere cannot lock out a user who signs in
from the office. Entra's smart lockout is the model: a threshold, then a lockout that grows
with each further failure; unlike Keycloak's, only wrong passwords and codes count here, never
a directory outage or a timeout (those say nothing about the password).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Container, Iterable, Mapping

DEFAULT_THRESHOLD = 10
DEFAULT_DURATION = 60.0
DEFAULT_MAX_DURATION = 3600.0
#: A user with no failure for this long starts again from a clean slate.
FORGET_AFTER = 86400.0
#: Doubling stops growing here (2**20 minutes is past any sensible cap anyway).
MAX_DOUBLINGS = 20
_K = TypeVar("_K", bound=tuple[str, ...])


@dataclass(frozen=True, slots=True, kw_only=True)
class LockoutRule:
    """A tenant's lockout settings; a threshold of 0 turns the lockout off."""

    threshold: int = DEFAULT_THRESHOLD
    duration: float = DEFAULT_DURATION
    max_duration: float = DEFAULT_MAX_DURATION
    forget_after: float = FORGET_AFTER

    def __post_init__(self) -> None:
        """Refuse settings that would lock nobody or everybody forever.

        Raises:
            ValueError: On a negative threshold or a non-positive duration.
        """
        if self.threshold < 0:
            raise ValueError("the lockout threshold cannot be negative (0 turns it off)")
        if self.duration <= 0 or self.max_duration < self.duration:
            raise ValueError("lockout durations must be positive, the cap at least the first")

    @property
    def enabled(self) -> bool:
        """Whether wrong passwords lock at all."""
        return self.threshold > 0


@dataclass(frozen=True, slots=True)
class Counter:
    """One user's failures from one kind of location (wall-clock seconds)."""

    #: Wrong passwords or codes since the last success (or since forgotten).
    failures: int = 0
    #: Lockouts so far: the next one lasts ``duration * 2 ** lockouts``, up to the cap.
    lockouts: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0

    @property
    def clean(self) -> bool:
        """Whether there is nothing to remember."""
        return self.failures == 0 and self.lockouts == 0


CLEAN = Counter()


def current(counter: Counter, rule: LockoutRule, now: float) -> Counter:
    """The counter as it stands ``now``: clean again after a long enough quiet spell.

    A lock still running is never forgotten, however long the spell (a cap may exceed it).
    """
    quiet = now - counter.last_failure > rule.forget_after
    if not counter.clean and quiet and counter.locked_until <= now:
        return CLEAN
    return counter


def locked_for(counter: Counter, now: float) -> float:
    """Seconds the user must still wait (0 when not locked)."""
    return max(0.0, counter.locked_until - now)


def attempts_left(counter: Counter, rule: LockoutRule) -> int:
    """How many more wrong answers may be checked before the lock comes down.

    Once locked, every further failure locks again at once, so one at a time is checked.
    """
    if not rule.enabled:
        return 1 << 30
    return max(1, rule.threshold - counter.failures)


def fail(counter: Counter, rule: LockoutRule, now: float) -> Counter:
    """Count one wrong password or code; lock when the threshold is reached.

    The first lock lasts ``duration``; each failure after a lock has run out locks again for
    twice as long, up to ``max_duration``. Only a success (or a quiet ``forget_after``)
    brings it back down.
    """
    if not rule.enabled:
        return counter
    counter = current(counter, rule, now)
    failures = counter.failures + 1
    if failures < rule.threshold:
        return replace(counter, failures=failures, last_failure=now)
    lock = min(rule.duration * 2 ** min(counter.lockouts, MAX_DOUBLINGS), rule.max_duration)
    return Counter(
        failures=failures, lockouts=counter.lockouts + 1, locked_until=now + lock, last_failure=now
    )


def to_shed(
    counters: Mapping[_K, Counter],
    *,
    protected: Container[tuple[str, str]],
    now: float,
    keep: int,
) -> list[_K]:
    """Which counters to forget so that at most ``keep`` remain, never a protected one.

    Keys are ``(tenant, user, ...)``; a ``(tenant, user)`` in ``protected`` keeps all its
    counters. Unlocked counters go first, least recently failing first; then locked ones,
    soonest to run out first. Fewer than asked are returned when the rest are protected.
    """
    excess = len(counters) - keep
    if excess <= 0:
        return []
    candidates = sorted(
        (
            (c.locked_until > now, c.locked_until if c.locked_until > now else c.last_failure),
            key,
        )
        for key, c in counters.items()
        if (key[0], key[1]) not in protected
    )
    return [key for _, key in candidates[:excess]]


#: Directories locking after this many failures or more keep one try for familiar places.
DIRECTORY_RESERVE_FROM = 4


def lowest_threshold(reported: Iterable[int]) -> int | None:
    """A domain's threshold from what its agents reported (0: never locks; None: nobody said).

    The lowest threshold that locks wins; 0 only when no agent reports one that does.
    """
    lowest: int | None = None
    for threshold in reported:
        if lowest is None or (threshold and (not lowest or threshold < lowest)):
            lowest = threshold
    return lowest


def directory_budget(threshold: int | None, *, unfamiliar: bool) -> int | None:
    """How many wrong passwords may be in the directory's count at once (None: no bound).

    One short of the directory's own lockout, so that the cloud can never lock a user out on
    premises, however the broker's own counters stand (two kinds of location, a lock that ran
    out and let one more through). Unfamiliar places stop one earlier still, so that the
    user's own last try is theirs.
    """
    if not threshold:
        return None
    reserve = 1 if unfamiliar and threshold >= DIRECTORY_RESERVE_FROM else 0
    return threshold - 1 - reserve
