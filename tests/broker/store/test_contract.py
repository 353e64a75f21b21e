"""The store's promises (``broker/store/protocols.py``), held by every implementation.

Each test opens the store several times, as separate processes do (the serving broker and the
CLI today; several brokers on one shared store later), and races them where a protocol says
"atomic". ``BACKENDS`` lists the implementations; one more backend adds itself there and must
pass the same tests unchanged.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from broker.policy.lockout import CLEAN, Counter
from broker.store import open_store
from broker.store.records import TOKEN_REFUSED, BrokerRecord, Challenge, Flight, UserLockout
from pta.errors import InvalidRequest, NotFound, Unauthenticated
from pta.tokens import EnrolmentToken

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from broker.store.protocols import Store

#: How each implementation is opened on a fresh location.
BACKENDS: dict[str, Callable[[Path], Store]] = {"sqlite": open_store}
RACERS = 8


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens another handle on one fresh store (tenant ``acme`` owns example.com)."""
    factory = BACKENDS[request.param]
    handles: list[Store] = []

    def open_handle() -> Store:
        handle = factory(tmp_path)
        handles.append(handle)
        return handle

    open_handle().add_tenant("acme", ["example.com"])
    yield open_handle
    for handle in handles:
        handle.close()


def race(opener: Callable[[], Store], work: Callable[[Store], object]) -> list[object]:
    """Run ``work`` at once on RACERS handles of their own; each one's result or exception."""
    handles = [opener() for _ in range(RACERS)]
    start = threading.Barrier(RACERS)
    results: list[object] = [None] * RACERS

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(handles[index])
        except Exception as error:  # noqa: BLE001 - the race's outcome, inspected by the test
            results[index] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


class TestEnrolmentTokens:
    """A token works once, whichever process uses it."""

    def test_used_once_under_a_race(self, opener: Callable[[], Store]) -> None:
        """Racing consumers on separate handles: exactly one gets the tenant."""
        token = opener().create_token("acme", 60, "ca")
        results = race(opener, lambda store: store.consume_token(token))
        assert results.count("acme") == 1
        refused = [r for r in results if r != "acme"]
        assert all(isinstance(r, Unauthenticated) for r in refused)
        with pytest.raises(Unauthenticated):
            opener().check_token(token)

    def test_one_message_for_every_unusable_token(self, opener: Callable[[], Store]) -> None:
        """Unknown, wrong secret, expired, deleted, used: the same refusal, nothing to learn."""
        store = opener()
        good = store.create_token("acme", 60, "ca")
        expired = store.create_token("acme", 0.001, "ca")
        deleted = store.create_token("acme", 60, "ca")
        assert store.delete_token(deleted.token_id)
        time.sleep(0.01)
        unknown = EnrolmentToken("0" * len(good.token_id), good.secret, "ca")
        wrong = EnrolmentToken(good.token_id, deleted.secret, "ca")
        for token in (unknown, wrong, expired, deleted):
            with pytest.raises(Unauthenticated) as refused:
                store.check_token(token)
            assert refused.value.message == TOKEN_REFUSED
        assert store.consume_token(good) == "acme"
        with pytest.raises(Unauthenticated, match=TOKEN_REFUSED):
            store.consume_token(good)

    def test_no_token_for_an_unknown_tenant(self, opener: Callable[[], Store]) -> None:
        """A token names a tenant that exists."""
        with pytest.raises(NotFound, match="globex"):
            opener().create_token("globex", 60, "ca")


class TestTotpSteps:
    """A TOTP step is spent once: a code works once, wherever it is typed."""

    def test_one_winner_per_step(self, opener: Callable[[], Store]) -> None:
        """Racing handles spend step 100: one True; then no step up to 100 works again."""
        opener().policy.enrol_mfa("acme", "alice", b"sealed", 0.0)
        results = race(opener, lambda store: store.policy.use_mfa_step("acme", "alice", 100))
        assert results.count(True) == 1
        assert results.count(False) == RACERS - 1
        store = opener()
        assert not store.policy.use_mfa_step("acme", "alice", 99)
        assert store.policy.use_mfa_step("acme", "alice", 101)


class TestChangesAreSeen:
    """What one process writes, another sees, and knows to reload."""

    def test_changed_after_another_handle_writes(self, opener: Callable[[], Store]) -> None:
        """``changed`` says so once after a write elsewhere, and the write is visible."""
        broker, cli = opener(), opener()
        broker.changed()
        assert not broker.changed()
        cli.add_tenant("globex", ["globex.example"])
        assert broker.changed()
        assert not broker.changed()
        assert broker.tenant_for_domain("globex.example") == "globex"

    def test_tenants_all_or_nothing(self, opener: Callable[[], Store]) -> None:
        """A tenant whose domain is taken is not created at all."""
        store = opener()
        with pytest.raises(InvalidRequest):
            store.add_tenant("globex", ["globex.example", "example.com"])
        assert "globex" not in store.tenants()
        assert store.tenant_for_domain("globex.example") is None


class TestCounters:
    """Lockout counters outlive the process that wrote them; clean ones are not kept."""

    def test_round_trip_and_clear(self, opener: Callable[[], Store]) -> None:
        """Saved through one handle, read through another; cleared by tenant or user."""
        writer, reader = opener(), opener()
        locked = Counter(failures=3, lockouts=1, locked_until=2e9, last_failure=1e9)
        writer.policy.save_counter(("acme", "alice", "unfamiliar"), locked)
        writer.policy.save_counter(("acme", "bob", "familiar"), Counter(failures=1))
        assert reader.policy.counters()[("acme", "alice", "unfamiliar")] == locked
        writer.policy.save_counter(("acme", "bob", "familiar"), CLEAN)
        assert ("acme", "bob", "familiar") not in reader.policy.counters()
        assert reader.policy.clear_counters("acme", "alice") == 1
        assert writer.policy.counters() == {}


class TestUserLock:
    """One user's counters and flights change under a lock every handle honours."""

    def test_admission_is_exact_under_a_race(self, opener: Callable[[], Store]) -> None:
        """Eight handles each admit a check while fewer than three fly: exactly three do."""

        def admit(store: Store) -> bool:
            def decide(state: UserLockout) -> bool:
                if len(state.flights) >= 3:
                    return False
                state.flights[f"f{id(store)}"] = Flight("unfamiliar", time.time() + 60)
                return True

            return store.policy.with_user("acme", "alice", decide)

        results = race(opener, admit)
        assert results.count(True) == 3
        flights = opener().policy.with_user("acme", "alice", lambda state: state.flights)
        assert len(flights) == 3

    def test_counts_are_never_lost(self, opener: Callable[[], Store]) -> None:
        """Eight racing read-modify-writes of one counter end at eight failures."""

        def fail(store: Store) -> None:
            def count(state: UserLockout) -> None:
                before = state.counters.get("directory", CLEAN)
                state.counters["directory"] = Counter(failures=before.failures + 1)

            store.policy.with_user("acme", "alice", count)

        race(opener, fail)
        assert opener().policy.counters()[("acme", "alice", "directory")].failures == RACERS

    def test_all_or_nothing_and_landing(self, opener: Callable[[], Store]) -> None:
        """Work that raises writes nothing; a landed flight and a cleaned counter are gone."""
        store = opener()

        def start(state: UserLockout) -> None:
            state.flights["one"] = Flight("familiar", 1e10)
            state.counters["familiar"] = Counter(failures=2, last_failure=1e9)

        store.policy.with_user("acme", "bob", start)

        def broken(state: UserLockout) -> None:
            state.flights.clear()
            state.counters.clear()
            raise RuntimeError

        with pytest.raises(RuntimeError):
            store.policy.with_user("acme", "bob", broken)
        seen = opener().policy.with_user(
            "acme", "bob", lambda state: UserLockout(dict(state.counters), dict(state.flights))
        )
        assert seen.flights == {"one": Flight("familiar", 1e10)}
        assert seen.counters["familiar"].failures == 2

        def land(state: UserLockout) -> None:
            del state.flights["one"]
            state.counters["familiar"] = CLEAN

        store.policy.with_user("acme", "bob", land)
        assert opener().policy.with_user("acme", "bob", lambda s: (s.flights, s.counters)) == (
            {},
            {},
        )


class TestMfaChallenges:
    """A challenge's tries are counted once across handles; its id is looked up by hash."""

    def test_the_last_try_goes_once(self, opener: Callable[[], Store]) -> None:
        """Two tries left, eight racing spenders: two get one each, the rest nothing."""
        opened = _challenge(time.time() + 60, tries=2)
        opener().policy.open_challenge(b"k" * 32, opened)
        results = race(opener, lambda s: s.policy.spend_challenge(b"k" * 32, time.time()))
        spent = [r for r in results if isinstance(r, Challenge)]
        assert len(spent) == 2
        assert sorted(c.attempts_left for c in spent) == [0, 1]
        assert {c.request_id for c in spent} == {opened.request_id}
        assert results.count(None) == RACERS - 2

    def test_expired_and_closed_are_gone(self, opener: Callable[[], Store]) -> None:
        """An expired challenge is not spent (and upkeep deletes it); a closed one is gone."""
        store = opener()
        now = time.time()
        for key, expires in ((b"a" * 32, now - 1), (b"b" * 32, now + 60)):
            store.policy.open_challenge(key, _challenge(expires))
        assert store.policy.spend_challenge(b"a" * 32, now) is None
        opener().policy.close_challenge(b"b" * 32)
        assert store.policy.spend_challenge(b"b" * 32, now) is None
        store.policy.forget_challenges_before(now)
        assert store.policy.spend_challenge(b"a" * 32, now - 10) is None


class TestRepeats:
    """Refused passwords' digests: the newest few per user, expiring, forgotten on unlock."""

    def test_kept_replaced_bounded_and_expiring(self, opener: Callable[[], Store]) -> None:
        """Seen through another handle; the same digest replaced; the oldest beyond ``keep``."""
        writer, reader = opener().policy, opener().policy
        now = time.time()
        for n in range(5):
            writer.add_repeat(
                "acme", "alice", bytes([n]) * 16, known=True, expires_at=now + n + 10, keep=4
            )
        writer.add_repeat(
            "acme", "alice", bytes([4]) * 16, known=False, expires_at=now + 20, keep=4
        )
        writer.add_repeat("acme", "bob", b"b" * 16, known=True, expires_at=now + 1, keep=4)
        seen = dict(reader.repeats("acme", "alice", now))
        assert sorted(seen) == [bytes([n]) * 16 for n in range(1, 5)]
        assert seen[bytes([4]) * 16] is False
        assert reader.repeats("acme", "bob", now + 2) == []
        reader.forget_repeats_before(now + 2)
        assert writer.repeats("acme", "bob", now) == []

    def test_forgotten_by_user_tenant_and_unlock(self, opener: Callable[[], Store]) -> None:
        """A user's go alone; a tenant's all go; an unlock forgets the user's."""
        store = opener().policy
        now = time.time()
        for user in ("alice", "bob", "carol"):
            store.add_repeat("acme", user, b"d" * 16, known=True, expires_at=now + 60, keep=4)
        store.forget_repeats("acme", "alice")
        assert store.repeats("acme", "alice", now) == []
        assert store.repeats("acme", "bob", now) != []
        opener().policy.clear_counters("acme", "bob")
        assert store.repeats("acme", "bob", now) == []
        store.forget_repeats("acme")
        assert store.repeats("acme", "carol", now) == []


def _challenge(expires: float, tries: int = 3) -> Challenge:
    return Challenge(
        tenant="acme",
        user="alice",
        subject="alice@example.com",
        address="203.0.113.7",
        location="unfamiliar",
        request_id="req",
        expires=expires,
        attempts_left=tries,
    )


class TestCluster:
    """Brokers sharing a store agree on one CA and see each other come and go."""

    def test_the_first_ca_claim_is_kept(self, opener: Callable[[], Store]) -> None:
        """Racing claims: every claimant is answered the same, winning fingerprint."""
        results = race(opener, lambda store: store.claim_ca(f"ca-{id(store)}"))
        assert len(set(results)) == 1
        assert opener().claim_ca("another") == results[0]

    def test_brokers_heartbeat_and_go_stale(self, opener: Callable[[], Store]) -> None:
        """A registered broker is listed while fresh, refreshed in place, gone once stale."""
        one, two = opener(), opener()
        now = time.time()
        one.register_broker(BrokerRecord("b1", "h:1", "h:2", now - 60, now - 60))
        two.register_broker(BrokerRecord("b2", "h:3", "h:4", now, now))
        assert [b.broker_id for b in one.brokers(fresh_within=5)] == ["b2"]
        one.register_broker(BrokerRecord("b1", "h:5", "h:2", now - 60, now))
        listed = two.brokers(fresh_within=5)
        assert [(b.broker_id, b.agent_endpoint, b.started_at) for b in listed] == [
            ("b1", "h:5", now - 60),
            ("b2", "h:3", now),
        ]
        two.deregister_broker("b1")
        assert [b.broker_id for b in one.brokers(fresh_within=5)] == ["b2"]

    def test_one_next_signing_key(self, opener: Callable[[], Store]) -> None:
        """Racing brokers each make the key after 100: one is kept; removal is idempotent."""
        results = race(
            opener,
            lambda s: s.add_signing_key(f"k{id(s)}", 200.0, b"sealed", unless_after=100.0),
        )
        assert results.count(True) == 1
        store = opener()
        [(kid, not_before, sealed)] = store.signing_keys()
        assert (not_before, sealed) == (200.0, b"sealed")
        assert store.add_signing_key("k-late", 150.0, b"x", unless_after=99.0) is False
        assert store.add_signing_key("k-next", 300.0, b"y", unless_after=200.0) is True
        store.remove_signing_key(kid)
        store.remove_signing_key(kid)
        assert [k for k, _, _ in opener().signing_keys()] == ["k-next"]
