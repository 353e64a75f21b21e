"""Recently refused passwords: ``broker/policy/recent_failures.py``, real HMAC, a fake clock."""

from __future__ import annotations

import pytest

from broker.policy.recent_failures import DIGEST_BYTES, RecentFailures, Repeat

TTL = 100.0
ALICE = "acme\0alice@example.com"
BOB = "acme\0bob@example.com"
WRONG = "Wrong-pw-1!"
OTHER_WRONG = "Wrong-pw-2!"


class FakeClock:
    """Monotonic time that moves only when told."""

    def __init__(self) -> None:
        """Start at zero."""
        self.now = 0.0

    def __call__(self) -> float:
        """The current fake time."""
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 0."""
    return FakeClock()


@pytest.fixture
def recent(clock: FakeClock) -> RecentFailures:
    """A memory of refused passwords with a short TTL on the fake clock."""
    return RecentFailures(ttl=TTL, per_user=3, max_users=10, clock=clock)


def refuse(recent: RecentFailures, user: str, password: str) -> None:
    """What the policy does when the directory refuses a password: check, then add."""
    _, digest = recent.check(user, password)
    recent.add(user, digest)


class TestRecentFailuresCheck:
    """A refused password is recognised, others are not."""

    def test_nothing_remembered_at_first(self, recent: RecentFailures) -> None:
        """A fresh memory has seen no password."""
        seen, digest = recent.check(ALICE, WRONG)
        assert not seen
        assert len(digest) == DIGEST_BYTES
        assert len(recent) == 0

    def test_refused_password_is_recognised(self, recent: RecentFailures) -> None:
        """A password added for a user is seen again for that user."""
        refuse(recent, ALICE, WRONG)
        assert recent.check(ALICE, WRONG)[0]
        assert len(recent) == 1

    @pytest.mark.parametrize(
        ("user", "password"),
        [(ALICE, OTHER_WRONG), (BOB, WRONG), (ALICE, WRONG.lower())],
        ids=["other-password", "other-user", "other-case"],
    )
    def test_only_that_user_and_password(
        self, recent: RecentFailures, user: str, password: str
    ) -> None:
        """Another password, or the same password of another user, is not a repeat."""
        refuse(recent, ALICE, WRONG)
        assert not recent.check(user, password)[0]

    def test_check_alone_remembers_nothing(self, recent: RecentFailures) -> None:
        """Checking a password does not remember it: only :meth:`add` does."""
        recent.check(ALICE, WRONG)
        assert not recent.check(ALICE, WRONG)[0]
        assert len(recent) == 0


class TestRecentFailuresDigest:
    """What is kept cannot give the password back."""

    def test_digest_is_keyed_and_bound_to_the_user(self, clock: FakeClock) -> None:
        """The digest is not the password, differs per user, and per process (random key)."""
        one = RecentFailures(ttl=TTL, clock=clock)
        two = RecentFailures(ttl=TTL, clock=clock)
        digest = one.check(ALICE, WRONG)[1]
        assert digest == one.check(ALICE, WRONG)[1]
        assert WRONG.encode() not in digest
        assert digest != one.check(BOB, WRONG)[1]
        assert digest != two.check(ALICE, WRONG)[1]

    def test_other_process_digest_is_not_recognised(self, clock: FakeClock) -> None:
        """A digest made under another key does not match this memory's passwords."""
        one = RecentFailures(ttl=TTL, clock=clock)
        two = RecentFailures(ttl=TTL, clock=clock)
        one.add(ALICE, two.check(ALICE, WRONG)[1])
        assert not one.check(ALICE, WRONG)[0]


class TestRecentFailuresTtl:
    """Entries live ``ttl`` seconds."""

    @pytest.mark.parametrize(
        ("elapsed", "seen"),
        [(0.0, True), (TTL - 1, True), (TTL, False), (TTL + 50, False)],
        ids=["at-once", "just-before-ttl", "at-ttl", "after-ttl"],
    )
    def test_expiry(
        self, recent: RecentFailures, clock: FakeClock, elapsed: float, *, seen: bool
    ) -> None:
        """A refused password is a repeat until ``ttl`` after it was added."""
        clock.now = 10.0
        refuse(recent, ALICE, WRONG)
        clock.now = 10.0 + elapsed
        assert bool(recent.check(ALICE, WRONG)[0]) is seen

    def test_expired_user_is_dropped(self, recent: RecentFailures, clock: FakeClock) -> None:
        """A user whose every entry expired is no longer held in memory."""
        refuse(recent, ALICE, WRONG)
        clock.now = TTL + 1
        recent.check(ALICE, WRONG)
        assert len(recent) == 0

    def test_each_entry_has_its_own_expiry(self, recent: RecentFailures, clock: FakeClock) -> None:
        """An older entry expires while a newer one of the same user is still live."""
        refuse(recent, ALICE, WRONG)
        clock.now = 50.0
        refuse(recent, ALICE, OTHER_WRONG)
        clock.now = TTL + 10
        assert not recent.check(ALICE, WRONG)[0]
        assert recent.check(ALICE, OTHER_WRONG)[0]


class TestRecentFailuresKeyRotation:
    """The key is replaced every ``ttl``; the previous one is kept one more period."""

    def test_entry_survives_one_rotation(self, recent: RecentFailures, clock: FakeClock) -> None:
        """An entry made under the previous key is still recognised after a rotation."""
        clock.now = TTL - 10
        refuse(recent, ALICE, WRONG)
        first_key = recent._keys[0]
        clock.now = TTL + 5
        assert recent.check(ALICE, WRONG)[0]
        assert recent._keys[1] == first_key
        assert recent._keys[0] != first_key

    def test_new_digests_use_the_new_key(self, recent: RecentFailures, clock: FakeClock) -> None:
        """After a rotation, check() hands out digests under the new key."""
        before = recent.check(ALICE, WRONG)[1]
        clock.now = TTL
        after = recent.check(ALICE, WRONG)[1]
        assert before != after

    def test_only_two_keys_are_kept(self, recent: RecentFailures, clock: FakeClock) -> None:
        """Two rotations later the first key is gone from memory."""
        first_key = recent._keys[0]
        for step in (1, 2):
            clock.now = step * TTL
            recent.check(ALICE, WRONG)
        assert len(recent._keys) == 2
        assert first_key not in recent._keys

    def test_no_rotation_within_ttl(self, recent: RecentFailures, clock: FakeClock) -> None:
        """Checks within one period keep the same key and give the same digest."""
        first = recent.check(ALICE, WRONG)[1]
        clock.now = TTL - 0.001
        assert recent.check(ALICE, WRONG)[1] == first
        assert len(recent._keys) == 1


class TestRecentFailuresBounds:
    """Memory stays bounded per user and in users."""

    def test_per_user_keeps_newest(self, recent: RecentFailures) -> None:
        """Only the last ``per_user`` refused passwords of a user are remembered."""
        passwords = [f"Wrong-{n}" for n in range(5)]
        for password in passwords:
            refuse(recent, ALICE, password)
        assert [bool(recent.check(ALICE, p)[0]) for p in passwords] == [
            False,
            False,
            True,
            True,
            True,
        ]

    def test_max_users_forgets_least_recently_failing(self, recent: RecentFailures) -> None:
        """Past ``max_users``, the users whose last failure is oldest are forgotten first."""
        users = [f"acme\0user{n}@example.com" for n in range(12)]
        for user in users[:10]:
            refuse(recent, user, WRONG)
        refuse(recent, users[0], OTHER_WRONG)
        for user in users[10:]:
            refuse(recent, user, WRONG)
        assert len(recent) == 10
        assert recent.check(users[0], WRONG)[0]
        assert not recent.check(users[1], WRONG)[0]
        assert not recent.check(users[2], WRONG)[0]
        assert all(recent.check(user, WRONG)[0] for user in users[3:])


class TestRecentFailuresForget:
    """A success or an unlock forgets a user's refused passwords."""

    def test_forget_one_user(self, recent: RecentFailures) -> None:
        """Forgetting one user leaves the others' entries alone."""
        refuse(recent, ALICE, WRONG)
        refuse(recent, BOB, WRONG)
        recent.forget(ALICE)
        assert not recent.check(ALICE, WRONG)[0]
        assert recent.check(BOB, WRONG)[0]
        assert len(recent) == 1

    def test_forget_unknown_user(self, recent: RecentFailures) -> None:
        """Forgetting a user with nothing remembered is harmless."""
        recent.forget(ALICE)
        assert len(recent) == 0


class TestUnknownNames:
    """A refusal as an unknown name is remembered apart; a tenant can be forgotten at once."""

    def test_unknown_name_is_told_apart(self, recent: RecentFailures) -> None:
        """Added with known=False: check says UNKNOWN_NAME, not REFUSED."""
        _, digest = recent.check(ALICE, WRONG)
        recent.add(ALICE, digest, known=False)
        assert recent.check(ALICE, WRONG)[0] == Repeat.UNKNOWN_NAME
        refuse(recent, ALICE, "Other-wrong")
        assert recent.check(ALICE, "Other-wrong")[0] == Repeat.REFUSED

    def test_forget_tenant(self, recent: RecentFailures) -> None:
        """Every user of one tenant is forgotten; another tenant's are kept."""
        refuse(recent, "acme\0alice", WRONG)
        refuse(recent, "acme\0bob", WRONG)
        refuse(recent, "globex\0alice", WRONG)
        recent.forget_tenant("acme")
        assert not recent.check("acme\0alice", WRONG)[0]
        assert not recent.check("acme\0bob", WRONG)[0]
        assert recent.check("globex\0alice", WRONG)[0] == Repeat.REFUSED
