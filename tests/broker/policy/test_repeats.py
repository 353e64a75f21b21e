"""Repeat memory through the policy: a refused password again is neither sent nor counted.

Real SQLite store and signer, fake clock: see :mod:`tests.broker.policy.helpers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from broker.policy.recent_failures import PER_USER

if TYPE_CHECKING:
    from broker.policy.signin_policy import (
        SignInPolicy,
    )
    from broker.store.protocols import Store

from tests.broker.policy.helpers import (
    BOB,
    RIGHT,
    TENANT,
    FakeClock,
    Outcome,
    admitted,
    configure,
    fail,
    failures,
    refused,
    report,
    succeed,
)


class TestSignInPolicyRepeats:
    """The same wrong password again is answered without counting or checking."""

    async def test_repeat_not_counted(self, store: Store, policy: SignInPolicy) -> None:
        """A repeat gets INVALID_CREDENTIALS from the policy, and the counter stays put."""
        configure(store, policy, lockout_threshold=3)
        attempt = await admitted(policy, "Wrong-1")
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        for _ in range(5):
            verdict = await refused(policy, "Wrong-1")
            assert verdict.outcome == Outcome.INVALID_CREDENTIALS
            assert verdict.decided_by == "repeat"
            assert verdict.retry_after == 0
        assert failures(store) == 1
        await fail(policy, 1)
        await admitted(policy, "Wrong-3")

    async def test_repeat_is_per_user(self, policy: SignInPolicy) -> None:
        """Another user's refused password is no repeat for this one."""
        attempt = await admitted(policy, "Wrong-1", upn=BOB)
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        await admitted(policy, "Wrong-1")

    async def test_repeat_forgotten_after_success(self, policy: SignInPolicy) -> None:
        """After a success the once-refused password is checked by the directory again."""
        attempt = await admitted(policy, "Wrong-1")
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        await succeed(policy)
        await admitted(policy, "Wrong-1")

    async def test_repeat_forgotten_when_the_password_changes(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """A password tried, then changed to, works at once, second factor pending or not."""
        configure(store, policy, mfa="always")
        attempt = await admitted(policy, "New-pw-1!")
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        change = await admitted(policy, RIGHT)  # ChangePassword: old RIGHT -> New-pw-1!
        policy.end(change, Outcome.SUCCESS)
        await admitted(policy, "New-pw-1!")

    async def test_repeat_forgotten_after_ttl(self, policy: SignInPolicy, clock: FakeClock) -> None:
        """A refused password is a repeat only for a while."""
        attempt = await admitted(policy, "Wrong-1")
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        clock.now += 3600
        await admitted(policy, "Wrong-1")


class TestRepeatsOfUnknownNames:
    """A refusal as "no such user" is not counted again, but is asked again."""

    async def test_unknown_name_asked_again_not_counted(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """The same password for a name the directory did not find: admitted, not counted."""
        configure(store, policy, lockout_threshold=3)
        first = await admitted(policy, "Typo-base-1")
        policy.end(first, Outcome.UNKNOWN_USER)
        for _ in range(5):  # A broken agent keeps saying "no such user": never counted again.
            again = await admitted(policy, "Typo-base-1")
            assert again.recheck
            policy.end(again, Outcome.UNKNOWN_USER)
        assert failures(store) == 1

    async def test_no_room_at_the_guard_answers_as_a_repeat(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """With the guard full, asked again would be refused by it: answered as a repeat.

        So an unknown name's repeats get what a known account's get (INVALID_CREDENTIALS,
        decided by the repeat memory), never a guard refusal that would tell them apart.
        """
        configure(store, policy, lockout_threshold=20)
        policy.directory_reported(TENANT, [report(5)])  # Budget from elsewhere: 3.
        for n in range(3):
            policy.end(await admitted(policy, f"Nobody-{n}"), Outcome.UNKNOWN_USER)
        verdict = await refused(policy, "Nobody-0")
        assert verdict.outcome == Outcome.INVALID_CREDENTIALS
        assert verdict.decided_by == "repeat"
        assert (await refused(policy, "Nobody-new")).decided_by == "directory_guard"

    async def test_fixed_directory_lets_the_right_password_in(self, policy: SignInPolicy) -> None:
        """Asked again once the directory is fixed: a right password is a success."""
        first = await admitted(policy, RIGHT)
        policy.end(first, Outcome.UNKNOWN_USER)
        again = await admitted(policy, RIGHT)
        policy.end(again, Outcome.SUCCESS)
        assert not (await admitted(policy, RIGHT)).recheck, "a success forgets it"

    async def test_now_a_wrong_password_counts(self, store: Store, policy: SignInPolicy) -> None:
        """Asked again, the directory now knows the account and refuses: that counts."""
        first = await admitted(policy, "Wrong-now-1")
        policy.end(first, Outcome.UNKNOWN_USER)
        again = await admitted(policy, "Wrong-now-1")
        policy.end(again, Outcome.INVALID_CREDENTIALS)
        assert failures(store) == 2
        verdict = await refused(policy, "Wrong-now-1")
        assert verdict.decided_by == "repeat"


class TestAgentSettingsChange:
    """An agent back with other directory settings: the tenant's refused passwords go."""

    async def test_changed_settings_forget_repeats(self, policy: SignInPolicy) -> None:
        """Same settings: still a repeat; other settings: checked by the directory again."""
        policy.agent_configured(TENANT, "agt-a", {}, b"settings-1")
        attempt = await admitted(policy, "Wrong-1")
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        policy.agent_configured(TENANT, "agt-a", {}, b"settings-1")  # A reconnect.
        assert (await refused(policy, "Wrong-1")).decided_by == "repeat"
        policy.agent_configured(TENANT, "agt-b", {}, b"settings-b")  # Another agent's first.
        assert (await refused(policy, "Wrong-1")).decided_by == "repeat"
        with structlog.testing.capture_logs() as logs:
            policy.agent_configured(TENANT, "agt-a", {}, b"settings-2")
        assert [e["event"] for e in logs if e["event"] == "policy.repeats_forgotten"]
        await admitted(policy, "Wrong-1")

    async def test_the_newest_few_are_kept(
        self, store: Store, policy: SignInPolicy, clock: FakeClock
    ) -> None:
        """Past ``PER_USER`` refused passwords of a user, the oldest is no repeat any more."""
        configure(store, policy, lockout_threshold=50)
        passwords = []
        for _ in range(PER_USER + 1):
            passwords += await fail(policy, 1)
            clock.now += 1
        await admitted(policy, passwords[0])
        for password in passwords[1:]:
            assert (await refused(policy, password)).decided_by == "repeat"
