"""What a right password earns through the policy: tokens, MFA challenges and their completion.

Real SQLite store and signer, fake clock: see :mod:`tests.broker.policy.helpers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import structlog

from broker.policy import mfa
from broker.policy.recent_failures import RecentFailures
from broker.policy.signin_policy import (
    SignInPolicy,
)
from pta.errors import (
    ChallengeExpired,
    InvalidRequest,
    Unavailable,
)
from pta.names import parse_upn

if TYPE_CHECKING:
    from broker.policy.signing import TokenSigner
    from broker.store.protocols import Store

from tests.broker.policy.helpers import (
    ALICE,
    ALICE_KEY,
    CHALLENGE_ATTEMPTS,
    CHALLENGE_TTL,
    ELSEWHERE,
    OFFICE,
    OFFICE_NET,
    RIGHT,
    TENANT,
    FakeClock,
    Outcome,
    Phone,
    admitted,
    claims,
    configure,
    fail,
    failures,
    make_policy,
    open_challenge,
    succeed,
)


class TestSignInPolicyGrant:
    """What a right password earns: a token, a challenge, or a refusal."""

    async def test_token_without_mfa(
        self, policy: SignInPolicy, signer: TokenSigner, clock: FakeClock
    ) -> None:
        """With mfa "never", a SUCCESS verdict carrying a token with amr ["pwd"]."""
        attempt = await succeed(policy)
        verdict = policy.grant(attempt, "req-1")
        assert verdict.outcome == Outcome.SUCCESS
        assert verdict.decided_by == "token"
        assert verdict.methods == ("pwd",)
        got = claims(signer, verdict.token)
        assert got["amr"] == ["pwd"]
        assert (got["sub"], got["tenant"], got["jti"]) == (str(ALICE), TENANT, "req-1")
        assert verdict.token_expires_at == got["exp"] == int(clock.now + signer.token_ttl)
        assert verdict.challenge_id == ""

    async def test_subject_is_canonical(self, policy: SignInPolicy, signer: TokenSigner) -> None:
        """The token's subject is one name per user, however it was typed: apps key on it."""
        upn = parse_upn(" Alice @example.com")
        attempt = await admitted(policy, RIGHT, upn=upn)
        policy.end(attempt, Outcome.SUCCESS)
        assert claims(signer, policy.grant(attempt, "req-1").token)["sub"] == "alice@example.com"

    @pytest.mark.usefixtures("phone")
    async def test_challenge_when_always_and_enrolled(
        self, store: Store, policy: SignInPolicy, challenges: mfa.ChallengeBook
    ) -> None:
        """With mfa "always" and an authenticator: MFA_REQUIRED with a challenge, no token."""
        configure(store, policy, mfa="always")
        attempt = await succeed(policy)
        verdict = policy.grant(attempt, "req-1")
        assert verdict.outcome == Outcome.MFA_REQUIRED
        assert verdict.decided_by == "mfa"
        assert verdict.challenge_id
        assert verdict.challenge_ttl == int(CHALLENGE_TTL)
        assert verdict.token == ""
        assert verdict.challenge_id not in repr(verdict)
        challenge = challenges.spend(verdict.challenge_id)
        assert challenge is not None
        assert (challenge.tenant, challenge.user, challenge.request_id) == (
            TENANT,
            ALICE_KEY,
            "req-1",
        )

    async def test_not_enrolled(
        self, store: Store, policy: SignInPolicy, challenges: mfa.ChallengeBook
    ) -> None:
        """With mfa "always" and no authenticator: MFA_NOT_ENROLLED, no challenge."""
        configure(store, policy, mfa="always")
        attempt = await succeed(policy)
        verdict = policy.grant(attempt, "req-1")
        assert verdict.outcome == Outcome.MFA_NOT_ENROLLED
        assert verdict.token == ""
        assert not verdict.challenge_id
        if isinstance(challenges, mfa.Challenges):
            assert len(challenges) == 0

    @pytest.mark.usefixtures("phone")
    @pytest.mark.parametrize(
        ("address", "outcome"),
        [(OFFICE, Outcome.SUCCESS), (ELSEWHERE, Outcome.MFA_REQUIRED)],
        ids=["familiar", "unfamiliar"],
    )
    async def test_unfamiliar_mode(
        self, store: Store, policy: SignInPolicy, address: str, outcome: int
    ) -> None:
        """With mfa "unfamiliar", a familiar address gets its token directly."""
        configure(store, policy, mfa="unfamiliar", familiar_networks=[OFFICE_NET])
        attempt = await succeed(policy, address)
        assert policy.grant(attempt, "req-1").outcome == outcome

    @pytest.mark.usefixtures("phone")
    async def test_mfa_pending_keeps_counters(self, store: Store, policy: SignInPolicy) -> None:
        """A right password still owing its code does not clear the counter yet."""
        configure(store, policy, mfa="always", lockout_threshold=5)
        await fail(policy, 2)
        await succeed(policy)
        assert failures(store) == 2

    @pytest.mark.usefixtures("phone")
    async def test_no_mfa_key(self, store: Store, signer: TokenSigner, clock: FakeClock) -> None:
        """An enrolled user under mfa "always" on a broker without MFA key: Unavailable."""
        policy = make_policy(store, signer, clock)
        configure(store, policy, mfa="always")
        attempt = await succeed(policy)
        with structlog.testing.capture_logs() as logs, pytest.raises(Unavailable):
            policy.grant(attempt, "req-1")
        assert [e["event"] for e in logs] == ["mfa.no_key"]


class TestSignInPolicyComplete:
    """The second factor: right codes earn a token once, wrong ones count."""

    async def test_good_code(
        self, store: Store, policy: SignInPolicy, signer: TokenSigner, phone: Phone
    ) -> None:
        """The current code: SUCCESS with amr ["pwd", "otp"], counters cleared, network kept."""
        configure(store, policy, mfa="always")
        await fail(policy, 2)
        challenge_id = await open_challenge(policy)
        verdict, challenge = policy.complete(challenge_id, phone.code())
        assert verdict.outcome == Outcome.SUCCESS
        assert verdict.decided_by == "token"
        assert verdict.methods == ("pwd", "otp")
        got = claims(signer, verdict.token)
        assert got["amr"] == ["pwd", "otp"]
        assert (got["sub"], got["jti"]) == (str(ALICE), "req-mfa")
        assert (challenge.tenant, challenge.request_id) == (TENANT, "req-mfa")
        assert store.policy.counters() == {}
        assert "203.0.113.0/24" in store.policy.familiar()[(TENANT, ALICE_KEY)]
        with pytest.raises(ChallengeExpired):
            policy.complete(challenge_id, phone.code())

    async def test_code_of_previous_step(
        self, store: Store, policy: SignInPolicy, phone: Phone
    ) -> None:
        """The code of the step before still counts (slow typing, phone clock drift)."""
        configure(store, policy, mfa="always")
        challenge_id = await open_challenge(policy)
        assert policy.complete(challenge_id, phone.code(-1))[0].outcome == Outcome.SUCCESS

    async def test_same_code_twice(self, store: Store, policy: SignInPolicy, phone: Phone) -> None:
        """A code once accepted is refused on a new challenge, and counts as a failure.

        (The first success made the address familiar: the second failure counts there.)
        """
        configure(store, policy, mfa="always")
        code = phone.code()
        assert policy.complete(await open_challenge(policy), code)[0].outcome == Outcome.SUCCESS
        verdict, _ = policy.complete(await open_challenge(policy), code)
        assert verdict.outcome == Outcome.INVALID_CREDENTIALS
        assert verdict.decided_by == "mfa"
        assert verdict.token == ""
        assert failures(store, "familiar") == 1

    async def test_wrong_codes_count_and_use_up_the_challenge(
        self, store: Store, policy: SignInPolicy, phone: Phone
    ) -> None:
        """Each wrong code counts; after its attempts the challenge is gone."""
        configure(store, policy, mfa="always", lockout_threshold=10)
        challenge_id = await open_challenge(policy)
        messages = []
        for _ in range(CHALLENGE_ATTEMPTS):
            verdict, _ = policy.complete(challenge_id, phone.wrong_code())
            assert verdict.outcome == Outcome.INVALID_CREDENTIALS
            messages.append(verdict.message)
        assert "2 more tries" in messages[0]
        assert "sign in again" in messages[-1]
        assert failures(store) == CHALLENGE_ATTEMPTS
        with pytest.raises(ChallengeExpired):
            policy.complete(challenge_id, phone.code())

    async def test_wrong_code_can_lock(
        self, store: Store, policy: SignInPolicy, phone: Phone
    ) -> None:
        """A wrong code reaching the threshold locks, and closes the challenge."""
        configure(store, policy, mfa="always", lockout_threshold=2, lockout_duration=60.0)
        await fail(policy, 1)
        challenge_id = await open_challenge(policy)
        verdict, _ = policy.complete(challenge_id, phone.wrong_code())
        assert verdict.outcome == Outcome.LOCKED_BY_POLICY
        assert verdict.retry_after == 60
        with pytest.raises(ChallengeExpired):
            policy.complete(challenge_id, phone.code())

    async def test_locked_user_good_code_refused(
        self, store: Store, policy: SignInPolicy, phone: Phone
    ) -> None:
        """A good code is refused while the user is locked at that kind of location."""
        configure(store, policy, mfa="always", lockout_threshold=2)
        challenge_id = await open_challenge(policy)
        await fail(policy, 2)
        verdict, _ = policy.complete(challenge_id, phone.code())
        assert verdict.outcome == Outcome.LOCKED_BY_POLICY
        assert verdict.token == ""

    async def test_expired_challenge(
        self, store: Store, policy: SignInPolicy, phone: Phone, clock: FakeClock
    ) -> None:
        """A challenge past its ttl is gone: ChallengeExpired, nothing counted."""
        configure(store, policy, mfa="always")
        challenge_id = await open_challenge(policy)
        clock.now += CHALLENGE_TTL
        with pytest.raises(ChallengeExpired):
            policy.complete(challenge_id, phone.code())
        assert store.policy.counters() == {}

    async def test_unknown_challenge(self, policy: SignInPolicy) -> None:
        """An id that was never handed out: ChallengeExpired."""
        with pytest.raises(ChallengeExpired):
            policy.complete("x" * 32, "123456")

    @pytest.mark.parametrize(
        ("challenge_id", "code"),
        [
            ("", "123456"),
            ("x" * 65, "123456"),
            (None, "12345"),
            (None, "1234567"),
            (None, "12345a"),
            (None, ""),
        ],
        ids=["no-id", "id-too-long", "short-code", "long-code", "letter-in-code", "no-code"],
    )
    async def test_malformed(
        self,
        store: Store,
        policy: SignInPolicy,
        phone: Phone,
        challenge_id: str | None,
        code: str,
    ) -> None:
        """A missing or overlong id, or a code not six digits: InvalidRequest, nothing used."""
        configure(store, policy, mfa="always")
        real_id = await open_challenge(policy)
        with pytest.raises(InvalidRequest):
            policy.complete(real_id if challenge_id is None else challenge_id, code)
        assert store.policy.counters() == {}
        verdict, _ = policy.complete(real_id, phone.code())
        assert verdict.outcome == Outcome.SUCCESS

    async def test_enrolment_removed_meanwhile(
        self, store: Store, policy: SignInPolicy, phone: Phone
    ) -> None:
        """An authenticator removed while its challenge was open: MFA_NOT_ENROLLED."""
        configure(store, policy, mfa="always")
        challenge_id = await open_challenge(policy)
        assert store.policy.remove_mfa(TENANT, ALICE_KEY)
        verdict, _ = policy.complete(challenge_id, phone.code())
        assert verdict.outcome == Outcome.MFA_NOT_ENROLLED

    @pytest.mark.parametrize(
        ("broker_key", "event"),
        [("none", "mfa.no_key"), ("other", "mfa.cannot_open_secret")],
        ids=["no-key", "other-key"],
    )
    async def test_cannot_open_secret(
        self,
        store: Store,
        policy: SignInPolicy,
        phone: Phone,
        broker_key: str,
        event: str,
    ) -> None:
        """A broker without the MFA key the secret was sealed with: Unavailable, logged."""
        configure(store, policy, mfa="always")
        challenge_id = await open_challenge(policy)
        other = None if broker_key == "none" else mfa.MfaKey.from_text(mfa.generate_key())
        checking = SignInPolicy(
            store.policy,
            policy.signer,
            mfa_key=other,
            challenges=policy.mfa._challenges,
            recent=RecentFailures(clock=phone.clock),
            clock=phone.clock,
        )
        with structlog.testing.capture_logs() as logs, pytest.raises(Unavailable):
            checking.complete(challenge_id, phone.code())
        assert [e["event"] for e in logs] == [event]
        assert phone.secret.hex() not in repr(logs)
        assert store.policy.counters() == {}


class TestSecondFactorForChanges:
    """A password change under an MFA policy carries its code; checked before the directory."""

    async def test_not_wanted(self, policy: SignInPolicy) -> None:
        """Policy "never": no code is asked for."""
        assert policy.second_factor(await admitted(policy, RIGHT), "") is None

    async def test_missing_code(self, store: Store, policy: SignInPolicy) -> None:
        """Wanted and missing: MFA_REQUIRED, and no challenge to complete."""
        configure(store, policy, mfa="always")
        verdict = policy.second_factor(await admitted(policy, RIGHT), "")
        assert verdict is not None
        assert verdict.outcome == Outcome.MFA_REQUIRED
        assert verdict.challenge_id == ""

    async def test_malformed_code(self, store: Store, policy: SignInPolicy) -> None:
        """Not six digits: INVALID_ARGUMENT."""
        configure(store, policy, mfa="always")
        with pytest.raises(InvalidRequest):
            policy.second_factor(await admitted(policy, RIGHT), "12ab56")

    async def test_wrong_code_counts(
        self, store: Store, policy: SignInPolicy, phone: Phone
    ) -> None:
        """A wrong code is a failure toward the lockout."""
        configure(store, policy, mfa="always", lockout_threshold=3)
        attempt = await admitted(policy, RIGHT)
        verdict = policy.second_factor(attempt, phone.wrong_code())
        assert verdict is not None
        assert verdict.outcome == Outcome.INVALID_CREDENTIALS
        policy.end(attempt, None)
        assert failures(store) == 1

    async def test_right_code_then_success_resets(
        self, store: Store, policy: SignInPolicy, phone: Phone
    ) -> None:
        """The right code lets the change through, and its success clears the counter."""
        configure(store, policy, mfa="always", lockout_threshold=5)
        await fail(policy, 2)
        attempt = await admitted(policy, RIGHT)
        assert policy.second_factor(attempt, phone.code()) is None
        policy.end(attempt, Outcome.SUCCESS)
        assert failures(store) == 0
        again = await admitted(policy, RIGHT)
        verdict = policy.second_factor(again, phone.code())
        assert verdict is not None  # The same code never works twice.
        assert verdict.outcome == Outcome.INVALID_CREDENTIALS
