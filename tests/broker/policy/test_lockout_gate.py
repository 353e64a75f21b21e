"""The lockout gate through the policy: counters, non-answers, state, in flight, the block.

Real SQLite store and signer, fake clock: see :mod:`tests.broker.policy.helpers`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import structlog

from broker.policy.lockout import Counter
from broker.policy.signin_policy import (
    Attempt,
    SignInPolicy,
    Verdict,
)
from broker.policy.tenant_policy import TenantPolicy
from broker.store import open_store
from pta.errors import (
    DeadlineExceeded,
)
from pta.names import parse_upn

if TYPE_CHECKING:
    from pathlib import Path

    from broker.policy.signing import TokenSigner
    from broker.store.protocols import Store

from tests.broker.policy.helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    ELSEWHERE,
    HOME,
    HOME_NEIGHBOUR,
    OFFICE,
    OFFICE_NET,
    RIGHT,
    TENANT,
    FakeClock,
    Outcome,
    admitted,
    begin,
    configure,
    deadline,
    fail,
    failures,
    make_policy,
    refused,
    succeed,
)


class TestSignInPolicyLockout:
    """Wrong passwords lock a user out for a while, per kind of location."""

    async def test_locked_after_threshold(
        self, store: Store, policy: SignInPolicy, clock: FakeClock
    ) -> None:
        """After ``threshold`` wrong passwords: LOCKED_BY_POLICY with retry_after, until it ends."""
        configure(store, policy, lockout_threshold=3, lockout_duration=60.0)
        await fail(policy, 2)
        policy.end(await admitted(policy, "Maybe-right"), None)
        await fail(policy, 1)
        verdict = await refused(policy, RIGHT)
        assert verdict.outcome == Outcome.LOCKED_BY_POLICY
        assert verdict.decided_by == "lockout"
        assert verdict.retry_after == 60
        assert "60 s" in verdict.message
        clock.now += 59.5
        assert (await refused(policy, RIGHT)).retry_after == 1
        clock.now += 0.5
        await admitted(policy, RIGHT)

    async def test_counter_is_stored(
        self, store: Store, policy: SignInPolicy, clock: FakeClock
    ) -> None:
        """Each counted failure is written to the store, lock included."""
        configure(store, policy, lockout_threshold=3, lockout_duration=60.0)
        await fail(policy, 3)
        assert store.policy.counters() == {
            (TENANT, ALICE_KEY, "unfamiliar"): Counter(
                failures=3, lockouts=1, locked_until=clock.now + 60, last_failure=clock.now
            ),
            (TENANT, ALICE_KEY, "directory"): Counter(failures=3, last_failure=clock.now),
        }

    async def test_unknown_user_counts(self, store: Store, policy: SignInPolicy) -> None:
        """UNKNOWN_USER counts like a wrong password (it looks like one)."""
        attempt = await admitted(policy, "Wrong-1")
        policy.end(attempt, Outcome.UNKNOWN_USER)
        assert failures(store) == 1

    async def test_end_counts_once(self, store: Store, policy: SignInPolicy) -> None:
        """Ending one attempt twice counts it once."""
        attempt = await admitted(policy, "Wrong-1")
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        assert failures(store) == 1

    async def test_case_variants_share_a_counter(self, store: Store, policy: SignInPolicy) -> None:
        """Failures as ``Alice`` and ``ALICE`` move one counter toward the lock."""
        configure(store, policy, lockout_threshold=2)
        await fail(policy, 1, upn=parse_upn("Alice@example.com"))
        await fail(policy, 1, upn=parse_upn("ALICE@example.com"))
        verdict = await refused(policy, RIGHT)
        assert verdict.outcome == Outcome.LOCKED_BY_POLICY

    async def test_other_users_unaffected(self, store: Store, policy: SignInPolicy) -> None:
        """One user's lock does not lock another."""
        configure(store, policy, lockout_threshold=2)
        await fail(policy, 2)
        await admitted(policy, RIGHT, upn=BOB)

    async def test_unfamiliar_failures_spare_configured_network(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """Guessing from elsewhere does not lock the user out at the office's CIDR."""
        configure(store, policy, lockout_threshold=3, familiar_networks=[OFFICE_NET])
        await fail(policy, 3, ELSEWHERE)
        assert (await refused(policy, RIGHT, ELSEWHERE)).outcome == Outcome.LOCKED_BY_POLICY
        attempt = await admitted(policy, RIGHT, OFFICE)
        assert attempt.location == "familiar"
        assert failures(store, "familiar") == 0

    async def test_unfamiliar_failures_spare_network_of_earlier_success(
        self, store: Store, policy: SignInPolicy, clock: FakeClock
    ) -> None:
        """A /24 the user signed in from is familiar: guesses elsewhere do not lock it."""
        configure(store, policy, lockout_threshold=3)
        await succeed(policy, HOME)
        assert store.policy.familiar() == {(TENANT, ALICE_KEY): {"198.51.100.0/24": clock.now}}
        await fail(policy, 3, ELSEWHERE)
        assert (await refused(policy, RIGHT, ELSEWHERE)).outcome == Outcome.LOCKED_BY_POLICY
        attempt = await admitted(policy, RIGHT, HOME_NEIGHBOUR)
        assert attempt.location == "familiar"

    async def test_familiar_failures_spare_unfamiliar(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """The two counters are apart both ways: a locked office leaves elsewhere open."""
        configure(store, policy, lockout_threshold=2, familiar_networks=[OFFICE_NET])
        await fail(policy, 2, OFFICE)
        assert (await refused(policy, RIGHT, OFFICE)).outcome == Outcome.LOCKED_BY_POLICY
        await admitted(policy, RIGHT, ELSEWHERE)

    async def test_familiar_network_expires(
        self, store: Store, policy: SignInPolicy, clock: FakeClock
    ) -> None:
        """A network not signed in from for ``familiar_window`` is unfamiliar again."""
        configure(store, policy, familiar_window=3600.0)
        await succeed(policy, HOME)
        clock.now += 3599
        assert (await admitted(policy, RIGHT, HOME_NEIGHBOUR)).location == "familiar"
        clock.now += 1
        assert (await admitted(policy, RIGHT, HOME_NEIGHBOUR)).location == "unfamiliar"

    async def test_lockout_off(self, store: Store, policy: SignInPolicy) -> None:
        """With threshold 0 every check is let through and nothing is counted."""
        configure(store, policy, lockout_threshold=0)
        await fail(policy, 20)
        await admitted(policy, RIGHT)
        assert store.policy.counters() == {}


class TestSignInPolicyNonAnswers:
    """Only the directory's word on the password counts."""

    @pytest.mark.parametrize(
        "outcome",
        [
            None,
            Outcome.DIRECTORY_UNAVAILABLE,
            Outcome.REQUEST_REJECTED,
            Outcome.OUTCOME_UNSPECIFIED,
            Outcome.ACCOUNT_LOCKED,
        ],
        ids=["no-answer", "directory-unavailable", "request-rejected", "unspecified", "ad-lock"],
    )
    async def test_never_counted(
        self, store: Store, policy: SignInPolicy, outcome: int | None
    ) -> None:
        """Outages, timeouts and refused envelopes neither count nor mark a repeat."""
        configure(store, policy, lockout_threshold=2)
        for _ in range(5):
            attempt = await admitted(policy, "Maybe-wrong")
            policy.end(attempt, outcome)
        assert store.policy.counters() == {}

    @pytest.mark.parametrize(
        "outcome",
        [Outcome.SUCCESS, Outcome.PASSWORD_EXPIRED, Outcome.PASSWORD_MUST_CHANGE],
        ids=["success", "expired", "must-change"],
    )
    async def test_right_password_resets(
        self, store: Store, policy: SignInPolicy, outcome: int
    ) -> None:
        """An answer proving the password right clears its location's counter and the repeats."""
        configure(store, policy, lockout_threshold=3)
        refused_before = await fail(policy, 2)
        attempt = await admitted(policy, RIGHT)
        policy.end(attempt, outcome)
        assert store.policy.counters() == {}
        policy.end(await admitted(policy, refused_before[0]), None)
        await fail(policy, 2)
        await admitted(policy, RIGHT)

    async def test_success_resets_only_its_kind_of_location(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """A success at the office leaves the count of guesses from elsewhere alone."""
        configure(store, policy, lockout_threshold=3, familiar_networks=[OFFICE_NET])
        await fail(policy, 2, ELSEWHERE)
        await fail(policy, 2, OFFICE)
        await succeed(policy, OFFICE)
        assert failures(store, "familiar") == 0
        assert failures(store, "unfamiliar") == 2
        await fail(policy, 1, ELSEWHERE)
        assert (await refused(policy, RIGHT, ELSEWHERE)).outcome == Outcome.LOCKED_BY_POLICY


class TestSignInPolicyState:
    """Counters persist; an administrator's unlock takes effect on reload."""

    async def test_counters_survive_restart(
        self, tmp_path: Path, store: Store, signer: TokenSigner, clock: FakeClock
    ) -> None:
        """A lock set before a restart still holds in a new policy on the reopened store."""
        policy = make_policy(store, signer, clock)
        configure(store, policy, lockout_threshold=2, lockout_duration=600.0)
        await fail(policy, 2)
        store.close()
        reopened = open_store(tmp_path)
        try:
            restarted = make_policy(reopened, signer, clock)
            verdict = await refused(restarted, RIGHT)
            assert verdict.outcome == Outcome.LOCKED_BY_POLICY
            assert verdict.retry_after == 600
        finally:
            reopened.close()

    async def test_failures_below_threshold_survive_restart(
        self, store: Store, signer: TokenSigner, clock: FakeClock
    ) -> None:
        """Failures short of the lock also carry over: the next one locks."""
        policy = make_policy(store, signer, clock)
        configure(store, policy, lockout_threshold=3)
        await fail(policy, 2)
        restarted = make_policy(store, signer, clock)
        await fail(restarted, 1)
        assert (await refused(restarted, RIGHT)).outcome == Outcome.LOCKED_BY_POLICY

    async def test_admin_unlock(self, store: Store, policy: SignInPolicy, ledger: str) -> None:
        """``clear_counters`` then ``reload`` unlocks, and forgets the refused passwords.

        With the counters in a shared store, the unlock applies at the next decision.
        """
        configure(store, policy, lockout_threshold=2)
        passwords = await fail(policy, 2)
        # Its unfamiliar counter, and its count of failures sent to the directory.
        assert store.policy.clear_counters(TENANT, ALICE_KEY) == 2
        if ledger == "memory":  # The store is the truth when shared: nothing to reload.
            assert (await refused(policy, RIGHT)).outcome == Outcome.LOCKED_BY_POLICY
            with structlog.testing.capture_logs() as logs:
                policy.reload()
            assert [e["event"] for e in logs] == ["lockout.cleared"]
        policy.end(await admitted(policy, RIGHT), None)
        await admitted(policy, passwords[-1])

    async def test_policy_defaults_until_set(self, store: Store, policy: SignInPolicy) -> None:
        """A tenant without a stored policy gets the defaults; a stored one after reload."""
        assert policy.policy_of(TENANT) == TenantPolicy()
        store.policy.set_tenant_policy(TENANT, TenantPolicy(mfa="always"))
        assert policy.policy_of(TENANT).mfa == "never"
        policy.reload()
        assert policy.policy_of(TENANT).mfa == "always"


class TestSignInPolicyAllowance:
    """No more checks of one user run at once than may still fail before the lock."""

    async def test_second_waits_then_locked(self, store: Store, policy: SignInPolicy) -> None:
        """With one failure left, a second check waits, then is refused when the first failed."""
        configure(store, policy, lockout_threshold=3)
        await fail(policy, 2)
        first = await admitted(policy, "Wrong-a")
        async with asyncio.TaskGroup() as tasks:
            second = tasks.create_task(begin(policy, "Wrong-b"))
            await asyncio.sleep(0.001)
            assert not second.done()
            policy.end(first, Outcome.INVALID_CREDENTIALS)
        verdict = second.result()
        assert isinstance(verdict, Verdict)
        assert verdict.outcome == Outcome.LOCKED_BY_POLICY

    @pytest.mark.parametrize(
        "outcome",
        [None, Outcome.SUCCESS],
        ids=["first-unanswered", "first-succeeded"],
    )
    async def test_second_admitted_when_first_did_not_fail(
        self, store: Store, policy: SignInPolicy, outcome: int | None
    ) -> None:
        """A waiting check goes ahead once the one before it ended without a failure."""
        configure(store, policy, lockout_threshold=3)
        await fail(policy, 2)
        first = await admitted(policy, "Maybe-a")
        async with asyncio.TaskGroup() as tasks:
            second = tasks.create_task(begin(policy, "Maybe-b"))
            await asyncio.sleep(0.001)
            assert not second.done()
            policy.end(first, outcome)
        assert isinstance(second.result(), Attempt)

    async def test_allowance_is_what_may_still_fail(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """With a clean counter, ``threshold`` checks run at once and the next one waits."""
        configure(store, policy, lockout_threshold=3)
        running = [await admitted(policy, f"Maybe-{n}") for n in range(3)]
        async with asyncio.TaskGroup() as tasks:
            fourth = tasks.create_task(begin(policy, "Maybe-3"))
            await asyncio.sleep(0.001)
            assert not fourth.done()
            policy.end(running[0], None)
        assert isinstance(fourth.result(), Attempt)

    async def test_other_location_does_not_wait(self, store: Store, policy: SignInPolicy) -> None:
        """The allowance is per kind of location: the office does not queue behind elsewhere."""
        configure(store, policy, lockout_threshold=3, familiar_networks=[OFFICE_NET])
        await fail(policy, 2, ELSEWHERE)
        await admitted(policy, "Maybe-a", ELSEWHERE)
        await admitted(policy, "Maybe-b", OFFICE)

    async def test_waiting_past_deadline(self, store: Store, policy: SignInPolicy) -> None:
        """A check still waiting at its deadline fails with DeadlineExceeded."""
        configure(store, policy, lockout_threshold=1)
        await admitted(policy, "Maybe-a")
        soon = asyncio.get_running_loop().time() + 0.005
        with pytest.raises(DeadlineExceeded):
            await policy.begin(TENANT, ALICE, "Maybe-b", ELSEWHERE, deadline=soon)
        assert policy.gate.turns.waiters == {}


class TestAttemptBlock:
    """``async with policy.attempt(...)``: every admitted check is accounted for exactly once."""

    async def test_leaving_without_an_agent_frees_the_place(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """An error before dispatch ends the attempt on the way out: the next check runs."""
        configure(store, policy, lockout_threshold=1)
        with pytest.raises(RuntimeError):
            async with policy.attempt(TENANT, ALICE, "Maybe-a", ELSEWHERE, deadline=deadline()):
                raise RuntimeError("before any agent")
        assert isinstance(await begin(policy, "Maybe-b"), Attempt)

    async def test_a_dispatched_attempt_is_the_jobs_to_settle(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """Handed to the dispatcher, an attempt is not ended by the block (its agent may bind).

        The user's one place stays taken until the job settles it: here a late wrong
        password, which locks the user, so the next check is refused, not admitted.
        """
        configure(store, policy, lockout_threshold=1)
        async with policy.attempt(
            TENANT, ALICE, "Late-wrong", ELSEWHERE, deadline=deadline()
        ) as admitted_:
            assert isinstance(admitted_, Attempt)
            settled, _ = policy.accounting(admitted_)
        soon = asyncio.get_running_loop().time() + 0.005
        with pytest.raises(DeadlineExceeded):  # Still in flight: the next one waits.
            await policy.begin(TENANT, ALICE, "Maybe-b", ELSEWHERE, deadline=soon)
        settled(Outcome.INVALID_CREDENTIALS)
        settled(Outcome.SUCCESS)  # Once only.
        verdict = await begin(policy, "Maybe-c")
        assert isinstance(verdict, Verdict)
        assert verdict.outcome == Outcome.LOCKED_BY_POLICY

    async def test_a_policy_answer_needs_no_ending(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """A locked user's block yields the policy's verdict and leaves nothing behind."""
        configure(store, policy, lockout_threshold=1)
        await fail(policy, 1)
        async with policy.attempt(TENANT, ALICE, RIGHT, ELSEWHERE, deadline=deadline()) as got:
            assert isinstance(got, Verdict)
            assert got.outcome == Outcome.LOCKED_BY_POLICY
        assert policy.gate.turns.waiters == {}

    async def test_no_allowance_when_off(self, store: Store, policy: SignInPolicy) -> None:
        """With the lockout off, any number of checks run at once."""
        configure(store, policy, lockout_threshold=0)
        for n in range(50):
            await admitted(policy, f"Maybe-{n}")
