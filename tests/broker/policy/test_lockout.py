"""Smart lockout arithmetic: ``broker/policy/lockout.py``, pure, the time passed in."""

from __future__ import annotations

import dataclasses

import pytest

from broker.policy import lockout
from broker.policy.lockout import CLEAN, Counter, LockoutRule

NOW = 1_000_000.0
RULE = LockoutRule(threshold=3, duration=60.0, max_duration=600.0)


def fail_times(counter: Counter, rule: LockoutRule, *times: float) -> Counter:
    """Count one wrong password at each of ``times``."""
    for when in times:
        counter = lockout.fail(counter, rule, when)
    return counter


class TestLockoutRule:
    """A tenant's settings: validated once, 0 turns the lockout off."""

    def test_defaults(self) -> None:
        """With no settings: 10 failures, one minute first, one hour at most, a day's memory."""
        rule = LockoutRule()
        assert (rule.threshold, rule.duration, rule.max_duration, rule.forget_after) == (
            lockout.DEFAULT_THRESHOLD,
            lockout.DEFAULT_DURATION,
            lockout.DEFAULT_MAX_DURATION,
            lockout.FORGET_AFTER,
        )
        assert rule.enabled

    @pytest.mark.parametrize(
        ("threshold", "enabled"), [(0, False), (1, True), (10, True)], ids=["off", "one", "ten"]
    )
    def test_enabled(self, threshold: int, *, enabled: bool) -> None:
        """Only a threshold of 0 turns the lockout off."""
        assert LockoutRule(threshold=threshold).enabled is enabled

    @pytest.mark.parametrize(
        "settings",
        [
            {"threshold": -1},
            {"duration": 0.0},
            {"duration": -5.0},
            {"duration": 120.0, "max_duration": 60.0},
        ],
        ids=["negative-threshold", "zero-duration", "negative-duration", "cap-below-first"],
    )
    def test_invalid(self, settings: dict[str, float]) -> None:
        """Settings that would lock nobody or everybody forever are refused."""
        with pytest.raises(ValueError, match="lockout"):
            LockoutRule(**settings)  # type: ignore[arg-type]

    def test_cap_equal_to_first_is_allowed(self) -> None:
        """A cap equal to the first lockout means every lockout lasts the same."""
        rule = LockoutRule(duration=60.0, max_duration=60.0)
        assert rule.max_duration == rule.duration

    def test_frozen(self) -> None:
        """A rule cannot be changed once made."""
        with pytest.raises(dataclasses.FrozenInstanceError):
            RULE.threshold = 5  # type: ignore[misc]


class TestCounter:
    """One user's failures from one kind of location."""

    @pytest.mark.parametrize(
        ("counter", "clean"),
        [
            (Counter(), True),
            (Counter(failures=1), False),
            (Counter(lockouts=1), False),
            (Counter(locked_until=NOW, last_failure=NOW), True),
        ],
        ids=["new", "one-failure", "locked-before", "only-times"],
    )
    def test_clean(self, counter: Counter, *, clean: bool) -> None:
        """A counter is clean when it holds neither failures nor lockouts."""
        assert counter.clean is clean

    def test_clean_constant(self) -> None:
        """``CLEAN`` is the empty counter."""
        assert Counter() == CLEAN
        assert CLEAN.clean


class TestCurrent:
    """Counters are forgotten after a quiet spell."""

    @pytest.mark.parametrize(
        ("quiet", "forgotten"),
        [(0.0, False), (lockout.FORGET_AFTER, False), (lockout.FORGET_AFTER + 1, True)],
        ids=["just-failed", "exactly-forget-after", "past-forget-after"],
    )
    def test_forget_after_quiet_spell(self, quiet: float, *, forgotten: bool) -> None:
        """More than ``forget_after`` seconds since the last failure: a clean slate."""
        counter = Counter(failures=2, lockouts=1, locked_until=NOW + 60, last_failure=NOW)
        got = lockout.current(counter, LockoutRule(), NOW + quiet)
        assert got == (CLEAN if forgotten else counter)

    def test_clean_counter_stays_itself(self) -> None:
        """A clean counter is returned as it is, however old."""
        assert lockout.current(CLEAN, RULE, NOW) is CLEAN

    def test_custom_forget_after(self) -> None:
        """The rule's own ``forget_after`` is the one used."""
        rule = LockoutRule(threshold=3, forget_after=100.0)
        counter = Counter(failures=1, last_failure=NOW)
        assert lockout.current(counter, rule, NOW + 100) is counter
        assert lockout.current(counter, rule, NOW + 101) == CLEAN

    def test_lock_longer_than_forget_after_is_not_cut_short(self) -> None:
        """A lock lasts its full duration, even one longer than the quiet spell that forgets."""
        two_days = 2 * lockout.FORGET_AFTER
        rule = LockoutRule(threshold=1, duration=two_days, max_duration=two_days)
        counter = lockout.fail(CLEAN, rule, NOW)
        assert lockout.locked_for(counter, NOW) == two_days
        later = NOW + lockout.FORGET_AFTER + 1
        assert lockout.locked_for(lockout.current(counter, rule, later), later) > 0


class TestLockedFor:
    """How long a locked user must still wait."""

    @pytest.mark.parametrize(
        ("locked_until", "expected"),
        [(0.0, 0.0), (NOW - 1, 0.0), (NOW, 0.0), (NOW + 30.5, 30.5)],
        ids=["never-locked", "ran-out", "runs-out-now", "locked"],
    )
    def test_locked_for(self, locked_until: float, expected: float) -> None:
        """The seconds left until ``locked_until``, never negative."""
        assert lockout.locked_for(Counter(locked_until=locked_until), NOW) == expected


class TestAttemptsLeft:
    """How many checks may still run before the lock could come down."""

    @pytest.mark.parametrize(
        ("failures", "expected"),
        [(0, 3), (1, 2), (2, 1), (3, 1), (7, 1)],
        ids=["none", "one", "two", "at-threshold", "past-threshold"],
    )
    def test_attempts_left(self, failures: int, expected: int) -> None:
        """Threshold minus failures, and at least one once the threshold is reached."""
        assert lockout.attempts_left(Counter(failures=failures), RULE) == expected

    def test_disabled_is_unbounded(self) -> None:
        """With the lockout off, any number of checks may run."""
        off = LockoutRule(threshold=0)
        assert lockout.attempts_left(Counter(failures=1000), off) >= 1 << 30


class TestFail:
    """Counting wrong passwords, locking, doubling up to the cap."""

    def test_counts_below_threshold(self) -> None:
        """Failures below the threshold are counted with their time, without a lock."""
        counter = fail_times(CLEAN, RULE, NOW, NOW + 5)
        assert counter == Counter(failures=2, lockouts=0, locked_until=0.0, last_failure=NOW + 5)
        assert lockout.locked_for(counter, NOW + 5) == 0

    def test_locks_at_threshold(self) -> None:
        """The threshold-th failure locks for ``duration``."""
        counter = fail_times(CLEAN, RULE, NOW, NOW + 1, NOW + 2)
        assert counter == Counter(
            failures=3, lockouts=1, locked_until=NOW + 2 + 60, last_failure=NOW + 2
        )
        assert lockout.locked_for(counter, NOW + 2) == 60

    def test_threshold_one_locks_at_once(self) -> None:
        """With a threshold of 1, the first failure locks."""
        counter = lockout.fail(CLEAN, LockoutRule(threshold=1), NOW)
        assert counter.lockouts == 1
        assert lockout.locked_for(counter, NOW) == lockout.DEFAULT_DURATION

    def test_each_lock_doubles_up_to_the_cap(self) -> None:
        """Each failure after a lock ran out locks again for twice as long, up to the cap."""
        counter = fail_times(CLEAN, RULE, NOW, NOW, NOW)
        durations = [lockout.locked_for(counter, NOW)]
        now = NOW
        for _ in range(6):
            now = counter.locked_until
            counter = lockout.fail(counter, RULE, now)
            durations.append(lockout.locked_for(counter, now))
        assert durations == [60, 120, 240, 480, 600, 600, 600]
        assert counter.lockouts == 7

    def test_doubling_stops_growing(self) -> None:
        """Past ``MAX_DOUBLINGS`` lockouts the length stops doubling (no huge powers)."""
        rule = LockoutRule(threshold=1, duration=1.0, max_duration=1e12)
        counter = Counter(failures=50, lockouts=50, last_failure=NOW)
        counter = lockout.fail(counter, rule, NOW)
        assert lockout.locked_for(counter, NOW) == 2.0**lockout.MAX_DOUBLINGS

    def test_quiet_spell_starts_afresh(self) -> None:
        """A failure after ``forget_after`` of quiet counts as the first one."""
        counter = fail_times(CLEAN, RULE, NOW, NOW, NOW)
        later = NOW + lockout.FORGET_AFTER + 1
        counter = lockout.fail(counter, RULE, later)
        assert counter == Counter(failures=1, last_failure=later)

    def test_disabled_counts_nothing(self) -> None:
        """With the lockout off, a failure returns the very same counter."""
        off = LockoutRule(threshold=0)
        assert lockout.fail(CLEAN, off, NOW) is CLEAN
