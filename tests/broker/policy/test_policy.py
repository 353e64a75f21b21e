"""Lockout, MFA, tokens around a check: ``broker/policy/signin_policy.py``, real store and signer.

Everything is real (SQLite store, Ed25519 signer, AES-GCM MFA key, TOTP codes) except the
clock, which moves only when a test says so. It starts at the real time, so the tokens the
policy signs verify with PyJWT as an application would verify them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest
import structlog

from broker.policy import mfa
from broker.policy.lockout import Counter
from broker.policy.recent_failures import RecentFailures
from broker.policy.signin_policy import (
    MAX_WAITING_PER_USER,
    Attempt,
    SignInPolicy,
    Verdict,
    threshold_warning,
    user_key,
)
from broker.policy.signing import TokenSigner
from broker.policy.tenant_policy import TenantPolicy
from broker.store import open_store
from broker.store.records import DirectoryPolicyRecord
from pta.errors import (
    ChallengeExpired,
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
    Unavailable,
)
from pta.names import Upn, parse_upn
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from broker.store.protocols import Store
    from broker.store.records import CounterKind

Outcome = outcome_pb2.Outcome
TENANT = "acme"
DOMAIN = "example.com"
ISSUER = "pta-broker-test"
AUDIENCE = "app.example.com"
ALICE = parse_upn("alice@example.com")
ALICE_KEY = user_key(ALICE)
BOB = parse_upn("bob@example.com")
OFFICE_NET = "10.0.0.0/8"
OFFICE = "10.1.2.3"
ELSEWHERE = "203.0.113.7"
HOME = "198.51.100.7"
HOME_NEIGHBOUR = "198.51.100.200"
RIGHT = "Right-pw-1!"
CHALLENGE_TTL = 60.0
CHALLENGE_ATTEMPTS = 3
#: Numbers every wrong password apart, so none is ever a repeat by accident.
_wrong = itertools.count()


class FakeClock:
    """Wall-clock time that moves only when told."""

    def __init__(self, now: float) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> float:
        """The current fake time."""
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at the real now (so issued tokens are valid now)."""
    return FakeClock(time.time())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real store in ``tmp_path`` with the tenant acme owning example.com."""
    store = open_store(tmp_path)
    store.add_tenant(TENANT, [DOMAIN])
    yield store
    store.close()


@pytest.fixture
def signer(tmp_path: Path, clock: FakeClock) -> TokenSigner:
    """A real token signer in ``tmp_path`` on the fake clock."""
    return TokenSigner(tmp_path, issuer=ISSUER, audience=AUDIENCE, clock=clock)


@pytest.fixture
def mfa_key() -> mfa.MfaKey:
    """A fresh MFA key."""
    return mfa.MfaKey.from_text(mfa.generate_key())


@pytest.fixture
def challenges(clock: FakeClock) -> mfa.Challenges:
    """Open challenges on the fake clock."""
    return mfa.Challenges(ttl=CHALLENGE_TTL, attempts=CHALLENGE_ATTEMPTS, clock=clock)


def make_policy(
    store: Store,
    signer: TokenSigner,
    clock: FakeClock,
    *,
    mfa_key: mfa.MfaKey | None = None,
    challenges: mfa.Challenges | None = None,
) -> SignInPolicy:
    """A policy on the real store and signer, with every clock the fake one."""
    return SignInPolicy(
        store.policy,
        signer,
        mfa_key=mfa_key,
        challenges=mfa.Challenges(clock=clock) if challenges is None else challenges,
        recent=RecentFailures(clock=clock),
        clock=clock,
    )


@pytest.fixture
def policy(
    store: Store,
    signer: TokenSigner,
    clock: FakeClock,
    mfa_key: mfa.MfaKey,
    challenges: mfa.Challenges,
) -> SignInPolicy:
    """The policy under test, with an MFA key."""
    return make_policy(store, signer, clock, mfa_key=mfa_key, challenges=challenges)


def configure(store: Store, policy: SignInPolicy, **changes: Any) -> None:
    """Set acme's policy as the CLI does, and have the policy re-read it."""
    store.policy.set_tenant_policy(TENANT, TenantPolicy().updated(**changes))
    policy.reload()


def deadline() -> float:
    """An event-loop deadline a few seconds away."""
    return asyncio.get_running_loop().time() + 5


async def begin(
    policy: SignInPolicy, password: str, address: str = ELSEWHERE, upn: Upn = ALICE
) -> Attempt | Verdict:
    """Ask the policy whether ``password`` may be checked."""
    return await policy.begin(TENANT, upn, password, address, deadline=deadline())


async def admitted(
    policy: SignInPolicy, password: str, address: str = ELSEWHERE, upn: Upn = ALICE
) -> Attempt:
    """Begin a check that the policy must let through."""
    result = await begin(policy, password, address, upn)
    assert isinstance(result, Attempt), result
    return result


async def refused(
    policy: SignInPolicy, password: str, address: str = ELSEWHERE, upn: Upn = ALICE
) -> Verdict:
    """Begin a check that the policy must answer itself."""
    result = await begin(policy, password, address, upn)
    assert isinstance(result, Verdict), result
    return result


async def fail(
    policy: SignInPolicy,
    times: int,
    address: str = ELSEWHERE,
    upn: Upn = ALICE,
    outcome: int = Outcome.INVALID_CREDENTIALS,
) -> list[str]:
    """Have the directory refuse ``times`` never used wrong passwords; return them.

    ``outcome`` is the directory's answer: UNKNOWN_USER for a name it does not have.
    """
    passwords = [f"Refused-{next(_wrong)}" for _ in range(times)]
    for password in passwords:
        attempt = await admitted(policy, password, address, upn)
        policy.end(attempt, outcome)
    return passwords


async def succeed(policy: SignInPolicy, address: str = ELSEWHERE) -> Attempt:
    """Have the directory accept alice's right password."""
    attempt = await admitted(policy, RIGHT, address)
    policy.end(attempt, Outcome.SUCCESS)
    return attempt


def failures(store: Store, location: CounterKind = "unfamiliar", user: str = ALICE_KEY) -> int:
    """The failures the store holds for a user at a kind of location."""
    counter = store.policy.counters().get((TENANT, user, location))
    return 0 if counter is None else counter.failures


def claims(signer: TokenSigner, token: str) -> dict[str, Any]:
    """Verify a token as an application does, with the published key set."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_json(signer.jwks())[kid]
    return jwt.decode(token, key, algorithms=["EdDSA"], issuer=ISSUER, audience=AUDIENCE)


class Phone:
    """Alice's authenticator app: her enrolled secret and the fake clock."""

    def __init__(self, secret: bytes, clock: FakeClock) -> None:
        """Hold the secret the broker sealed at enrolment."""
        self.secret = secret
        self.clock = clock

    def code(self, steps: int = 0) -> str:
        """The code shown now, or ``steps`` time steps from now."""
        return mfa.code_at(self.secret, self.clock() + steps * mfa.TIME_STEP)

    def wrong_code(self) -> str:
        """A well-formed code that is none of the window's codes."""
        window = {self.code(steps) for steps in (-1, 0, 1)}
        return next(c for c in ("000000", "111111", "222222", "333333") if c not in window)


@pytest.fixture
def phone(store: Store, mfa_key: mfa.MfaKey, clock: FakeClock) -> Phone:
    """Enrol a TOTP secret for alice, sealed as ``mfa enroll`` does; her phone shows its codes."""
    secret = mfa.new_secret()
    sealed = mfa_key.seal(secret, TENANT, ALICE_KEY)
    store.policy.enrol_mfa(TENANT, ALICE_KEY, sealed, clock())
    return Phone(secret, clock)


async def open_challenge(policy: SignInPolicy, address: str = ELSEWHERE) -> str:
    """A right password for alice under an MFA policy: return the challenge id."""
    attempt = await succeed(policy, address)
    verdict = policy.grant(attempt, "req-mfa")
    assert verdict.outcome == Outcome.MFA_REQUIRED, verdict
    return verdict.challenge_id


class TestUserKey:
    """One counter per person, whatever the spelling."""

    @pytest.mark.parametrize(
        ("typed", "key"),
        [
            ("alice@example.com", "alice@example.com"),
            ("Alice@Example.COM", "alice@example.com"),
            ("\uff21\uff2c\uff29\uff23\uff25@example.com", "alice@example.com"),
            ("STRASSE@example.com", "strasse@example.com"),
            ("straße@example.com", "strasse@example.com"),
            (" alice@example.com", "alice@example.com"),
            ("alice  @example.com", "alice@example.com"),
            ("  ALICE  @example.com", "alice@example.com"),
            ("alice   smith@example.com", "alice smith@example.com"),
            ("ali\u200bce@example.com", "alice@example.com"),
            ("ali\u00adce@example.com", "alice@example.com"),
            ("\ufeffalice@example.com", "alice@example.com"),
        ],
        ids=[
            "plain",
            "mixed-case",
            "fullwidth",
            "upper",
            "sharp-s",
            "leading-space",
            "trailing-spaces",
            "both",
            "inner-run",
            "zero-width-space",
            "soft-hyphen",
            "bom",
        ],
    )
    def test_user_key(self, typed: str, key: str) -> None:
        """Every spelling LDAP matching treats as the same name is one user (RFC 4518)."""
        assert user_key(parse_upn(typed)) == key


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

    async def test_admin_unlock(self, store: Store, policy: SignInPolicy) -> None:
        """``clear_counters`` then ``reload`` unlocks, and forgets the refused passwords."""
        configure(store, policy, lockout_threshold=2)
        passwords = await fail(policy, 2)
        # Its unfamiliar counter, and its count of failures sent to the directory.
        assert store.policy.clear_counters(TENANT, ALICE_KEY) == 2
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
        assert policy.gate._waiters == {}


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
        assert policy.gate._waiters == {}

    async def test_no_allowance_when_off(self, store: Store, policy: SignInPolicy) -> None:
        """With the lockout off, any number of checks run at once."""
        configure(store, policy, lockout_threshold=0)
        for n in range(50):
            await admitted(policy, f"Maybe-{n}")


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
        self, store: Store, policy: SignInPolicy, challenges: mfa.Challenges
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
        challenge = challenges.get(verdict.challenge_id)
        assert challenge is not None
        assert (challenge.tenant, challenge.user, challenge.request_id) == (
            TENANT,
            ALICE_KEY,
            "req-1",
        )

    async def test_not_enrolled(
        self, store: Store, policy: SignInPolicy, challenges: mfa.Challenges
    ) -> None:
        """With mfa "always" and no authenticator: MFA_NOT_ENROLLED, no challenge."""
        configure(store, policy, mfa="always")
        attempt = await succeed(policy)
        verdict = policy.grant(attempt, "req-1")
        assert verdict.outcome == Outcome.MFA_NOT_ENROLLED
        assert verdict.token == ""
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


def report(threshold: int, *, known: bool = True) -> DirectoryPolicyRecord:
    """What an agent reports of example.com's directory lockout."""
    return DirectoryPolicyRecord(
        tenant=TENANT,
        domain=DOMAIN,
        agent_id="agent-a",
        known=known,
        lockout_threshold=threshold,
        source="test",
        reported_at=0.0,
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
        assert policy.gate._waiters == {}

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
        assert policy.gate.directory[TENANT][DOMAIN] == 5
