"""The store's promises (``broker/store/protocols.py``), held by every implementation.

Each test opens the store several times, as separate processes do (a broker and the CLI; several
brokers on one shared store), and races them where a protocol says "atomic". ``BACKENDS`` lists
the implementations: SQLite in a fresh directory, PostgreSQL (the session's real server) in a
fresh database; each must pass the same tests unchanged.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from broker.policy.lockout import CLEAN, Counter
from broker.policy.tenant_policy import TenantPolicy
from broker.store.records import (
    TOKEN_REFUSED,
    BrokerRecord,
    Challenge,
    ConnectionStatus,
    Flight,
    Refused,
    ReportedPolicy,
    UserLockout,
)
from pta.errors import InvalidRequest, NotFound, Unauthenticated
from pta.tokens import EnrolmentToken
from tests.broker.store.backends import BACKENDS
from tests.support import wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from broker.store.policy_store import PolicyStore
    from broker.store.protocols import Store
    from broker.store.records import CertificateRecord


RACERS = 8
KEY = bytes(range(32))


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens another handle on one fresh store (tenant ``acme`` owns example.com)."""
    factory = BACKENDS[request.param](request, tmp_path)
    handles: list[Store] = []

    def open_handle() -> Store:
        handle = factory()
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

    @pytest.mark.parametrize(
        "write",
        [
            lambda s: s.add_tenant("globex", ["globex.example"]),
            lambda s: s.policy.set_tenant_policy("acme", TenantPolicy().updated(mfa="always")),
            lambda s: s.policy.change_banned_terms("acme", add=[("Acme", "acme")], limit=10),
            lambda s: s.policy.clear_counters("acme", "alice"),
            lambda s: s.policy.clear_counters("acme"),
            lambda s: s.agents.revoke("agt-1"),
            lambda s: s.policy.enrol_mfa("acme", "bob", b"sealed", 1.0),
            lambda s: s.policy.remove_mfa("acme", "alice"),
        ],
        ids=[
            "tenant",
            "policy",
            "banned-terms",
            "unlock-user",
            "unlock-tenant",
            "revoke",
            "mfa-enrol",
            "mfa-remove",
        ],
    )
    def test_what_a_broker_caches_is_announced(
        self, opener: Callable[[], Store], write: Callable[[Store], object]
    ) -> None:
        """Each write an operator makes that a serving broker must apply makes it reload."""
        cli = opener()
        _agent(cli, "agt-1")
        cli.policy.save_counter(("acme", "alice", "directory"), Counter(failures=1))
        cli.policy.enrol_mfa("acme", "alice", b"sealed", 1.0)
        broker = opener()
        broker.changed()
        assert not broker.changed()
        write(cli)
        assert broker.changed()

    def test_new_domain_found_within_a_tick_unasked(self, opener: Callable[[], Store]) -> None:
        """A handle nobody calls ``changed`` on still finds another's new domain, soon."""
        broker, cli = opener(), opener()
        assert broker.tenant_for_domain("globex.example") is None
        cli.add_tenant("globex", ["globex.example"])
        wait_for(lambda: broker.tenant_for_domain("globex.example") == "globex", timeout=1.0)
        broker.add_tenant("initech", ["initech.example"])
        assert broker.tenant_for_domain("initech.example") == "initech"  # its own: at once

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
    """Refused passwords' digests: kept with the user's state, expiring, forgotten on unlock."""

    @staticmethod
    def _add(store: PolicyStore, user: str, entries: dict[bytes, Refused]) -> None:
        store.with_user("acme", user, lambda state: state.repeats.update(entries))

    @staticmethod
    def _seen(store: PolicyStore, user: str) -> dict[bytes, Refused]:
        return store.with_user("acme", user, lambda state: dict(state.repeats))

    def test_kept_replaced_and_removed_with_the_state(self, opener: Callable[[], Store]) -> None:
        """Seen through another handle; a changed entry replaced; a removed one gone."""
        writer, reader = opener().policy, opener().policy
        now = time.time()
        entries = {bytes([n]) * 16: Refused(known=True, expires_at=now + n) for n in range(3)}
        self._add(writer, "alice", entries)
        self._add(writer, "alice", {b"\0" * 16: Refused(known=False, expires_at=now + 9)})
        assert self._seen(reader, "alice") == {
            b"\0" * 16: Refused(known=False, expires_at=now + 9),
            b"\1" * 16: Refused(known=True, expires_at=now + 1),
            b"\2" * 16: Refused(known=True, expires_at=now + 2),
        }
        reader.with_user("acme", "alice", lambda state: state.repeats.pop(b"\1" * 16))
        assert sorted(self._seen(writer, "alice")) == [b"\0" * 16, b"\2" * 16]
        assert self._seen(writer, "bob") == {}

    def test_not_kept_when_the_work_raises(self, opener: Callable[[], Store]) -> None:
        """All or nothing, as counters and flights."""
        store = opener().policy

        def broken(state: UserLockout) -> None:
            state.repeats[b"x" * 16] = Refused(known=True, expires_at=time.time() + 60)
            raise RuntimeError("the decision failed")

        with pytest.raises(RuntimeError):
            store.with_user("acme", "alice", broken)
        assert self._seen(opener().policy, "alice") == {}

    def test_forgotten_by_user_tenant_unlock_and_expiry(self, opener: Callable[[], Store]) -> None:
        """A user's go alone; a tenant's all go; an unlock forgets the user's; upkeep expires."""
        store = opener().policy
        now = time.time()
        for user in ("alice", "bob", "carol", "dave"):
            self._add(store, user, {b"d" * 16: Refused(known=True, expires_at=now + 60)})
        self._add(store, "dave", {b"e" * 16: Refused(known=True, expires_at=now + 1)})
        store.forget_repeats("acme", "alice")
        assert self._seen(store, "alice") == {}
        assert self._seen(store, "bob") != {}
        opener().policy.clear_counters("acme", "bob")
        assert self._seen(store, "bob") == {}
        store.forget_repeats_before(now + 2)
        assert sorted(self._seen(store, "dave")) == [b"d" * 16]
        store.forget_repeats("acme")
        assert self._seen(store, "carol") == {}
        assert self._seen(store, "dave") == {}


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


def _agent(store: Store, agent_id: str, *, not_after: float = 2e9) -> CertificateRecord:
    """Enrol an agent of acme with a first certificate ``serial-<id>``; that certificate."""
    store.agents.add(
        agent_id=agent_id,
        tenant="acme",
        hostname="host",
        version="1",
        serial=f"serial-{agent_id}",
        envelope_public_key=KEY,
        not_after=not_after,
    )
    record = store.agents.certificate(f"serial-{agent_id}")
    assert record is not None
    return record


class TestCertificates:
    """A certificate renews once, a used renewal retires its predecessor, a revocation holds."""

    def test_renewal_retires_unused_successor_then_attach_retires_original(
        self, opener: Callable[[], Store]
    ) -> None:
        """Renew twice: the first renewal is retired; attach the second: the original is."""
        store = opener()
        original = _agent(store, "agt-r")
        store.agents.renew(original, serial="r1", envelope_public_key=KEY, not_after=2e9)
        store.agents.renew(original, serial="r2", envelope_public_key=KEY, not_after=2e9)
        first, second = store.agents.certificate("r1"), store.agents.certificate("r2")
        assert first is not None
        assert first.retired
        assert second is not None
        assert not second.retired
        assert second.predecessor == "serial-agt-r"
        store.agents.attached(second)
        again = opener().agents.certificate("serial-agt-r")
        assert again is not None
        assert again.retired
        assert "replaced" in again.refusal(0.0)
        with pytest.raises(Unauthenticated, match="replaced"):
            store.agents.renew(again, serial="r3", envelope_public_key=KEY, not_after=2e9)

    def test_racing_renewals_leave_one_usable_successor(self, opener: Callable[[], Store]) -> None:
        """Eight handles renew one certificate at once: all are recorded, one stays usable."""
        original = _agent(opener(), "agt-race")
        results = race(
            opener,
            lambda store: store.agents.renew(
                original, serial=f"r-{id(store)}", envelope_public_key=KEY, not_after=2e9
            ),
        )
        assert results == [None] * RACERS
        (listed,) = [a for a in opener().agents.list(fresh_within=5) if a.agent_id == "agt-race"]
        successors = [serial for serial, _ in listed.certificates if serial != original.serial]
        assert len(successors) == 1

    def test_revocation_reaches_every_certificate(self, opener: Callable[[], Store]) -> None:
        """Revoked: each certificate says so, renewal is refused; an unknown agent is no-op."""
        cli, broker = opener(), opener()
        original = _agent(cli, "agt-v")
        cli.agents.renew(original, serial="v2", envelope_public_key=KEY, not_after=2e9)
        assert cli.agents.revoke("agt-v")
        assert cli.agents.revoke("agt-v")  # Again: still revoked, since the first time.
        assert not cli.agents.revoke("agt-nobody")
        seen = broker.agents.certificates(["serial-agt-v", "v2", "unknown"])
        assert sorted(seen) == ["serial-agt-v", "v2"]
        assert all(r.revoked and "revoked" in r.refusal(0.0) for r in seen.values())
        with pytest.raises(Unauthenticated, match="revoked"):
            broker.agents.renew(original, serial="v3", envelope_public_key=KEY, not_after=2e9)
        (listed,) = broker.agents.list(fresh_within=5)
        assert listed.revoked_at is not None
        assert listed.certificates == []


def _stream(connection_id: str, agent_id: str, in_flight: int = 0) -> ConnectionStatus:
    now = time.time()
    return ConnectionStatus(
        connection_id=connection_id,
        agent_id=agent_id,
        version="1",
        serial=f"serial-{agent_id}",
        domains=["example.com"],
        connected_at=now,
        last_seen=now,
        in_flight=in_flight,
    )


class TestReportsPerBroker:
    """Each broker's report is its own: listings merge every broker's fresh one."""

    def test_streams_of_every_broker_are_listed_with_their_broker(
        self, opener: Callable[[], Store]
    ) -> None:
        """Two brokers report; each replaces only its own; a stopped one's streams go."""
        one, two, cli = opener(), opener(), opener()
        _agent(cli, "agt-1")
        _agent(cli, "agt-2")
        one.agents.report_connections("b1", [_stream("c1", "agt-1", 2), _stream("c2", "agt-2")])
        two.agents.report_connections("b2", [_stream("c1", "agt-1", 1)])

        def streams() -> dict[str, list[tuple[str, str, int]]]:
            return {
                a.agent_id: [(c.broker_id, c.connection_id, c.in_flight) for c in a.connections]
                for a in cli.agents.list(fresh_within=5)
            }

        assert streams() == {
            "agt-1": [("b1", "c1", 2), ("b2", "c1", 1)],
            "agt-2": [("b1", "c2", 0)],
        }
        one.agents.report_connections("b1", [_stream("c3", "agt-2")])
        assert streams() == {"agt-1": [("b2", "c1", 1)], "agt-2": [("b1", "c3", 0)]}
        two.agents.report_connections("b2", [])
        assert streams() == {"agt-1": [], "agt-2": [("b1", "c3", 0)]}
        assert all(not a.connections for a in cli.agents.list(fresh_within=-1))  # all stale

    def test_status_by_broker(self, opener: Callable[[], Store]) -> None:
        """Each broker's status apart; an empty report withdraws it; stale ones are not shown."""
        one, two, cli = opener(), opener(), opener()
        assert cli.status(fresh_within=5) == {}
        one.report_status("b1", {"mfa_key": "yes", "role": "first"})
        two.report_status("b2", {"mfa_key": "no"})
        assert cli.status(fresh_within=5) == {
            "b1": {"mfa_key": "yes", "role": "first"},
            "b2": {"mfa_key": "no"},
        }
        one.report_status("b1", {"mfa_key": "no"})
        two.report_status("b2", {})
        assert cli.status(fresh_within=5) == {"b1": {"mfa_key": "no"}}
        assert cli.status(fresh_within=-1) == {}


def _policy(domain: str, threshold: int, *, known: bool = True) -> ReportedPolicy:
    return ReportedPolicy(
        domain=domain, known=known, lockout_threshold=threshold, source=f"source of {domain}"
    )


class TestDirectoryPolicies:
    """Each agent's last report of its directories' thresholds, per tenant."""

    def test_a_report_replaces_the_agents_last(self, opener: Callable[[], Store]) -> None:
        """Listed by domain then agent; a domain no longer reported is forgotten for that agent."""
        store = opener()
        store.add_tenant("globex", ["globex.example"])
        for agent_id in ("agt-a", "agt-b"):
            _agent(store, agent_id)
        store.record_directory_policies(
            "acme", "agt-a", [_policy("example.com", 5), _policy("other.example", 5)]
        )
        recorded = store.record_directory_policies("acme", "agt-b", [_policy("example.com", 7)])
        assert [(r.agent_id, r.source) for r in recorded] == [("agt-b", "source of example.com")]
        store.record_directory_policies("acme", "agt-a", [_policy("example.com", 4)])
        listed = opener().directory_policies("acme")
        assert [(r.domain, r.agent_id, r.lockout_threshold) for r in listed] == [
            ("example.com", "agt-a", 4),
            ("example.com", "agt-b", 7),
        ]
        assert all(r.tenant == "acme" and r.known and r.reported_at > 0 for r in listed)
        assert opener().directory_policies("globex") == []

    def test_one_agent_reported_at_every_broker_at_once(self, opener: Callable[[], Store]) -> None:
        """An agent attached to every broker says the same at each one at once: each kept."""
        _agent(opener(), "agt-a")
        report = [_policy("example.com", 5), _policy("other.example", 5)]
        results = race(opener, lambda s: s.record_directory_policies("acme", "agt-a", report))
        assert not [r for r in results if isinstance(r, Exception)], results
        listed = opener().directory_policies("acme")
        assert [(r.domain, r.agent_id) for r in listed] == [
            ("example.com", "agt-a"),
            ("other.example", "agt-a"),
        ]

    def test_unknown_policy_has_no_threshold(self, opener: Callable[[], Store]) -> None:
        """An unknown policy is kept as unknown with threshold 0, whatever was sent."""
        store = opener()
        _agent(store, "agt-a")
        store.record_directory_policies("acme", "agt-a", [_policy("example.com", 9, known=False)])
        (record,) = opener().directory_policies("acme")
        assert (record.known, record.lockout_threshold) == (False, 0)


class TestBannedTerms:
    """A tenant's banned list changes all or nothing, never past its limit."""

    def test_racing_additions_stop_at_the_limit(self, opener: Callable[[], Store]) -> None:
        """Eight handles each add a term to a list limited to five: five win, five are kept."""
        results = race(
            opener,
            lambda store: store.policy.change_banned_terms(
                "acme", add=[(f"Term{id(store)}", f"term{id(store)}")], limit=5
            ),
        )
        assert sorted(r[2] for r in results if isinstance(r, tuple)) == [1, 2, 3, 4, 5]
        assert all(isinstance(r, InvalidRequest) for r in results if not isinstance(r, tuple))
        assert len(opener().policy.banned_terms("acme")) == 5

    def test_all_or_nothing_and_revisions(self, opener: Callable[[], Store]) -> None:
        """A change over the limit changes nothing; a change moves the revision, none does not."""
        cli, broker = opener(), opener()
        assert broker.policy.banned_revisions() == {}
        added = cli.policy.change_banned_terms(
            "acme", add=[("Acme", "acme"), ("Wile", "wile"), ("ACME", "acme")], limit=3
        )
        assert added == (2, 0, 2)
        first = broker.policy.banned_revisions()["acme"]
        with pytest.raises(InvalidRequest, match="at most 3"):
            cli.policy.change_banned_terms(
                "acme",
                add=[("Road", "road"), ("Runner", "runner"), ("Coyote", "coyote")],
                remove=["wile"],
                limit=3,
            )
        assert broker.policy.banned_terms("acme") == [("Acme", "acme"), ("Wile", "wile")]
        assert cli.policy.change_banned_terms("acme", add=[("acme", "acme")], limit=3) == (0, 0, 2)
        assert broker.policy.banned_revisions()["acme"] == first
        assert cli.policy.change_banned_terms("acme", remove=["wile", "none"], limit=3) == (
            0,
            1,
            1,
        )
        assert broker.policy.banned_revisions()["acme"] != first


class TestMfaSecrets:
    """An authenticator is replaced whole, and removed."""

    def test_enrol_again_replaces_and_resets_the_steps(self, opener: Callable[[], Store]) -> None:
        """A new secret starts with no step spent; removal says whether there was one."""
        store = opener()
        store.policy.enrol_mfa("acme", "alice", b"old", 1.0)
        assert store.policy.use_mfa_step("acme", "alice", 50)
        store.policy.enrol_mfa("acme", "alice", b"new", 2.0)
        record = opener().policy.mfa("acme", "alice")
        assert record is not None
        assert (record.sealed, record.last_step, record.enrolled_at) == (b"new", 0, 2.0)
        assert opener().policy.mfa_users("acme") == [("alice", 2.0)]
        assert not store.policy.use_mfa_step("acme", "bob", 1)  # No authenticator: no step.
        assert store.policy.remove_mfa("acme", "alice")
        assert not store.policy.remove_mfa("acme", "alice")
        assert opener().policy.mfa("acme", "alice") is None


class TestForgetting:
    """What no rule needs any more is forgotten; what locks someone is not."""

    def test_counters_known_accounts_and_networks(self, opener: Callable[[], Store]) -> None:
        """Old clean-enough counters go, locking ones stay; accounts with a counter stay."""
        store = opener()
        store.policy.save_counter(("acme", "old", "familiar"), Counter(1, 0, 0.0, 100.0))
        store.policy.save_counter(("acme", "locked", "familiar"), Counter(5, 1, 9e9, 100.0))
        store.policy.save_counter(("acme", "new", "familiar"), Counter(1, 0, 0.0, 900.0))
        store.policy.forget_counters_before(500.0)
        assert {user for _, user, _ in opener().policy.counters()} == {"locked", "new"}
        for user in ("old", "locked"):
            store.policy.add_known_account("acme", user, 100.0)
        store.policy.add_known_account("acme", "recent", 900.0)
        store.policy.forget_known_accounts_before(500.0)
        assert opener().policy.known_accounts() == {("acme", "locked"), ("acme", "recent")}
        store.policy.save_familiar("acme", "alice", "192.0.2.0/24", 100.0)
        store.policy.save_familiar("acme", "alice", "198.51.100.0/24", 900.0)
        store.policy.save_familiar("acme", "alice", "192.0.2.0/24", 950.0)
        store.policy.forget_familiar_before("acme", 500.0)
        assert opener().policy.familiar() == {
            ("acme", "alice"): {"192.0.2.0/24": 950.0, "198.51.100.0/24": 900.0}
        }

    def test_one_agents_hello_at_every_broker_at_once(self, opener: Callable[[], Store]) -> None:
        """An agent's hello reaches every broker at once: its rules replaced, none refused."""
        _agent(opener(), "agt-a")
        rules = [("example.com", "d1", "uid"), ("other.example", "d1", "uid")]
        results = race(opener, lambda s: s.policy.replace_account_rules("acme", "agt-a", rules))
        assert not [r for r in results if isinstance(r, Exception)], results
        assert opener().policy.account_rules() == [("acme", "agt-a", *rule) for rule in rules]

    def test_account_rules_are_replaced_per_agent(self, opener: Callable[[], Store]) -> None:
        """An agent's hello replaces what it said before; another agent's rules stay."""
        store = opener()
        for agent_id in ("agt-a", "agt-b"):
            _agent(store, agent_id)
        store.policy.replace_account_rules("acme", "agt-a", [("example.com", "d1", "uid")])
        store.policy.replace_account_rules("acme", "agt-b", [("example.com", "d2", "uid")])
        store.policy.replace_account_rules(
            "acme", "agt-a", [("example.com", "d3", "upn"), ("other.example", "d3", "upn")]
        )
        assert opener().policy.account_rules() == [
            ("acme", "agt-a", "example.com", "d3", "upn"),
            ("acme", "agt-a", "other.example", "d3", "upn"),
            ("acme", "agt-b", "example.com", "d2", "uid"),
        ]
