"""The directory's own threshold: warnings, the guard that stays below it, and the bounds.

Real SQLite store and signer, fake clock: see :mod:`tests.broker.policy.helpers`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import pytest
import structlog

from broker.policy.signin_policy import (
    MAX_WAITING_PER_USER,
    SignInPolicy,
    Verdict,
    threshold_warning,
    user_key,
)
from pta.errors import (
    Overloaded,
)
from pta.names import parse_upn

if TYPE_CHECKING:
    from broker.policy.signing import TokenSigner
    from broker.store.protocols import Store

from tests.broker.policy.helpers import (
    ALICE_KEY,
    DOMAIN,
    OFFICE,
    OFFICE_NET,
    RIGHT,
    TENANT,
    FakeClock,
    Outcome,
    admitted,
    begin,
    configure,
    fail,
    failures,
    make_policy,
    refused,
    report,
)


class TestDirectoryThresholds:
    """Warning when the directory would lock users out before the broker does."""

    @pytest.mark.parametrize(
        ("broker", "directory", "warned"),
        [(10, 5, True), (10, 10, True), (10, 11, False), (0, 5, True), (3, 0, False)],
        ids=["directory-lower", "equal", "broker-lower", "broker-off", "directory-off"],
    )
    def test_reported_threshold(
        self, store: Store, policy: SignInPolicy, broker: int, directory: int, *, warned: bool
    ) -> None:
        """A directory threshold not above the broker's logs a warning naming both."""
        configure(store, policy, lockout_threshold=broker)
        with structlog.testing.capture_logs() as logs:
            policy.directory_reported(TENANT, [report(directory)])
        events = [e for e in logs if e["event"] == "policy.threshold_not_below_directory"]
        if not warned:
            assert events == []
            return
        [event] = events
        assert event["log_level"] == "warning"
        assert (event["tenant"], event["domain"]) == (TENANT, DOMAIN)
        assert (event["broker_threshold"], event["directory_threshold"]) == (broker, directory)
        assert event["advice"] == threshold_warning(broker, directory)

    def test_unknown_threshold_forgotten(self, policy: SignInPolicy) -> None:
        """A directory whose lockout is no longer known stops the warnings."""
        policy.directory_reported(TENANT, [report(5)])
        with structlog.testing.capture_logs() as logs:
            policy.directory_reported(TENANT, [report(5, known=False)])
        assert logs == []

    def test_policy_change_checks_again(self, store: Store, policy: SignInPolicy) -> None:
        """A policy change re-read by ``reload`` is checked against what agents reported."""
        configure(store, policy, lockout_threshold=3)
        policy.directory_reported(TENANT, [report(5)])
        with structlog.testing.capture_logs() as logs:
            configure(store, policy, lockout_threshold=6)
        events = [e["event"] for e in logs]
        assert events.count("policy.threshold_not_below_directory") == 1


class TestThresholdWarning:
    """Why the broker's lockout would come too late, or nothing."""

    @pytest.mark.parametrize(
        ("broker", "directory", "contains"),
        [
            (5, 10, ""),
            (9, 10, ""),
            (10, 10, "set the broker's threshold below the directory's 10 (it is 10)"),
            (20, 10, "set the broker's threshold below the directory's 10 (it is 20)"),
            (0, 10, "the broker's lockout is off and the directory locks after 10"),
            (0, 0, ""),
            (10, 0, ""),
            (10, -1, ""),
        ],
        ids=[
            "well-below",
            "just-below",
            "equal",
            "above",
            "broker-off",
            "both-off",
            "directory-off",
            "directory-negative",
        ],
    )
    def test_threshold_warning(self, broker: int, directory: int, contains: str) -> None:
        """Empty when the broker locks first or the directory never locks; advice otherwise."""
        warning = threshold_warning(broker, directory)
        if contains:
            assert contains in warning
        else:
            assert warning == ""


class TestDirectoryGuard:
    """The broker never lets the directory's own count reach its lockout."""

    @pytest.fixture
    def reported(self, policy: SignInPolicy) -> SignInPolicy:
        """The agent said: the directory locks after 5."""
        policy.directory_reported(TENANT, [report(5)])
        return policy

    async def test_unfamiliar_stops_two_short(self, store: Store, reported: SignInPolicy) -> None:
        """From elsewhere: 3 wrong passwords reach a directory that locks at 5, then no more."""
        configure(store, reported, lockout_threshold=10)
        await fail(reported, 3)
        verdict = await refused(reported, "Another-1")
        assert verdict.outcome == Outcome.LOCKED_BY_POLICY
        assert verdict.decided_by == "directory_guard"
        assert verdict.retry_after > 0

    async def test_familiar_keeps_the_last_try(self, store: Store, reported: SignInPolicy) -> None:
        """The office may still try once more (4), never the 5th that would lock."""
        configure(store, reported, lockout_threshold=10, familiar_networks=[OFFICE_NET])
        await fail(reported, 3)
        await fail(reported, 1, address=OFFICE)
        verdict = await refused(reported, "Another-2", address=OFFICE)
        assert verdict.decided_by == "directory_guard"

    async def test_directory_success_starts_again(
        self, store: Store, reported: SignInPolicy
    ) -> None:
        """A password the directory takes resets its count, and so the guard's."""
        configure(store, reported, lockout_threshold=10, familiar_networks=[OFFICE_NET])
        await fail(reported, 3)
        attempt = await admitted(reported, RIGHT, OFFICE)
        reported.end(attempt, Outcome.SUCCESS)
        await fail(reported, 3)

    async def test_unknown_threshold_no_guard(self, store: Store, policy: SignInPolicy) -> None:
        """Without a report, only the broker's own threshold applies."""
        configure(store, policy, lockout_threshold=10)
        await fail(policy, 6)
        await admitted(policy, "Another-3")

    async def test_in_flight_checks_count_against_it(
        self, store: Store, reported: SignInPolicy
    ) -> None:
        """Checks still running count: a fourth waits for them, then is decided afresh."""
        configure(store, reported, lockout_threshold=10)
        running = [await admitted(reported, f"Flight-{n}") for n in range(3)]
        fourth = asyncio.ensure_future(begin(reported, "Flight-3"))
        await asyncio.sleep(0)
        assert not fourth.done()
        for attempt in running:
            reported.end(attempt, Outcome.INVALID_CREDENTIALS)
        verdict = await fourth
        assert isinstance(verdict, Verdict)
        assert verdict.decided_by == "directory_guard"


class TestBounds:
    """What a flood can make the policy hold stays bounded."""

    async def test_waiting_per_user_is_capped(self, store: Store, policy: SignInPolicy) -> None:
        """Past the cap, a further sign-in of the same user is refused at once."""
        configure(store, policy, lockout_threshold=1)
        first = await admitted(policy, "Wait-0")
        waiting = [
            asyncio.ensure_future(begin(policy, f"Wait-{n}"))
            for n in range(1, MAX_WAITING_PER_USER + 1)
        ]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await begin(policy, "Wait-extra")
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        policy.end(first, None)
        assert policy.gate.turns.waiters == {}

    async def test_counters_are_shed_past_the_cap(
        self,
        store: Store,
        signer: TokenSigner,
        clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A flood of unknown names sheds the oldest unlocked counters; a locked one is kept."""
        monkeypatch.setattr("broker.policy.lockout_gate.MAX_COUNTERS", 20)
        policy = make_policy(store, signer, clock)
        configure(store, policy, lockout_threshold=2)
        await fail(policy, 2)  # Alice: locked.
        for n in range(30):
            sprayed = parse_upn(f"sprayed{n}@example.com")
            await fail(policy, 1, upn=sprayed, outcome=Outcome.UNKNOWN_USER)
            assert len(policy.gate.counters) <= 20
        counters = store.policy.counters()
        assert len(counters) <= 20
        assert (TENANT, ALICE_KEY, "unfamiliar") in counters
        assert (await refused(policy, RIGHT)).outcome == Outcome.LOCKED_BY_POLICY

    async def test_a_flood_of_unknown_names_never_resets_a_victim(
        self,
        store: Store,
        signer: TokenSigner,
        clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A victim's count and directory-guard count outlive any flood of made-up names.

        Alice (a user the directory knows: it answered INVALID_CREDENTIALS) has two wrong
        passwords counted; then 300 names the directory does not know fail once each, from a
        table capped at 40 counters, the oldest failures of all being hers. The table stays
        bounded, her counts stay, across a restart too; so the guard still stops her
        guesser one short of the directory's own lockout.
        """
        monkeypatch.setattr("broker.policy.lockout_gate.MAX_COUNTERS", 40)
        policy = make_policy(store, signer, clock)
        policy.directory_reported(TENANT, [report(5)])  # Unfamiliar budget: 5 - 1 - 1 = 3.
        await fail(policy, 2)
        for round_ in range(2):  # Before and after a restart.
            for n in range(150):
                clock.now += 1  # Every flooding name fails later than alice did.
                sprayed = parse_upn(f"made-up-{round_}-{n}@example.com")
                await fail(policy, 1, upn=sprayed, outcome=Outcome.UNKNOWN_USER)
                assert len(policy.gate.counters) <= 40
            assert failures(store) == 2
            assert failures(store, "directory") == 2
            assert len(store.policy.counters()) <= 40
            policy = make_policy(store, signer, clock)
            policy.directory_reported(TENANT, [report(5)])
        await fail(policy, 1)
        verdict = await refused(policy, "Refused-after-flood")
        assert verdict.decided_by == "directory_guard"

    async def test_known_accounts_filling_the_table_still_bound_unknown_names(
        self,
        store: Store,
        signer: TokenSigner,
        clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """More real accounts with counts than the cap: all kept, unknown names still bounded."""
        monkeypatch.setattr("broker.policy.lockout_gate.MAX_COUNTERS", 20)
        policy = make_policy(store, signer, clock)
        real = [parse_upn(f"real{n}@example.com") for n in range(15)]  # 30 counters.
        for upn in real:
            await fail(policy, 1, upn=upn)
        for n in range(200):
            clock.now += 1
            sprayed = parse_upn(f"made-up-{n}@example.com")
            await fail(policy, 1, upn=sprayed, outcome=Outcome.UNKNOWN_USER)
            assert len(policy.gate.counters) <= 30 + 20 + 2
        kept = {user for _, user, _ in policy.gate.counters}
        assert {user_key(upn) for upn in real} <= kept

    async def test_one_agent_cannot_unsay_another(self, policy: SignInPolicy) -> None:
        """An agent that cannot read the threshold leaves another agent's report standing."""
        policy.directory_reported(TENANT, [report(5)])
        other = dataclasses.replace(report(0, known=False), agent_id="agent-b")
        policy.directory_reported(TENANT, [other])
        assert policy.gate.thresholds.lowest[TENANT][DOMAIN] == 5
