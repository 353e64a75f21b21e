"""What the policy tests share: a real store and signer, a clock that moves when told, helpers.

Everything is real (SQLite store, Ed25519 signer, AES-GCM MFA key, TOTP codes) except the
clock, which moves only when a test says so. It starts at the real time, so the tokens the
policy signs verify with PyJWT as an application would verify them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from broker.policy import mfa
from broker.policy.lockout_ledger import SHARED_THREADS, SharedLedger
from broker.policy.recent_failures import RecentFailures
from broker.policy.shared_challenges import SharedChallenges
from broker.policy.shared_repeats import SharedRecentFailures
from broker.policy.signin_policy import (
    Attempt,
    SignInPolicy,
    Verdict,
    user_key,
)
from broker.policy.signing import TokenSigner
from broker.policy.tenant_policy import TenantPolicy
from broker.store import open_store
from broker.store.records import DirectoryPolicyRecord
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
def challenges(clock: FakeClock, store: Store, ledger: str) -> mfa.ChallengeBook:
    """Open challenges on the fake clock: in memory, or in the store with shared counters."""
    if ledger == "shared":
        return SharedChallenges(
            store.policy, ttl=CHALLENGE_TTL, attempts=CHALLENGE_ATTEMPTS, clock=clock
        )
    return mfa.Challenges(ttl=CHALLENGE_TTL, attempts=CHALLENGE_ATTEMPTS, clock=clock)


def make_policy(  # noqa: PLR0913 - the policy's parts, by name
    store: Store,
    signer: TokenSigner,
    clock: FakeClock,
    *,
    mfa_key: mfa.MfaKey | None = None,
    challenges: mfa.ChallengeBook | None = None,
    shared: bool = False,
) -> SignInPolicy:
    """A policy on the real store and signer, with every clock the fake one.

    ``shared``: the counters live in the store, as for several brokers on one store.
    """
    return SignInPolicy(
        store.policy,
        signer,
        mfa_key=mfa_key,
        challenges=mfa.Challenges(clock=clock) if challenges is None else challenges,
        recent=(
            SharedRecentFailures(store.policy, b"k" * 32, clock=clock)
            if shared
            else RecentFailures(clock=clock)
        ),
        clock=clock,
        # A store many threads may use (PostgreSQL) is waited on in threads, as in a broker.
        ledger=(
            SharedLedger(store.policy, threads=SHARED_THREADS if store.shared else 0)
            if shared
            else None
        ),
    )


@pytest.fixture(params=["memory", "shared"])
def ledger(request: pytest.FixtureRequest) -> str:
    """Where the policy under test keeps its counters: memory (one broker) or the store."""
    return str(request.param)


@pytest.fixture
def policy(  # noqa: PLR0913, PLR0917 - fixtures, found by name
    store: Store,
    signer: TokenSigner,
    clock: FakeClock,
    mfa_key: mfa.MfaKey,
    challenges: mfa.ChallengeBook,
    ledger: str,
) -> SignInPolicy:
    """The policy under test, with an MFA key, its counters in memory and in the store."""
    return make_policy(
        store, signer, clock, mfa_key=mfa_key, challenges=challenges, shared=ledger == "shared"
    )


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
        await ended(policy, await admitted(policy, password, address, upn), outcome)
    return passwords


async def succeed(policy: SignInPolicy, address: str = ELSEWHERE) -> Attempt:
    """Have the directory accept alice's right password."""
    attempt = await admitted(policy, RIGHT, address)
    await ended(policy, attempt, Outcome.SUCCESS)
    return attempt


async def ended(policy: SignInPolicy, attempt: Attempt, outcome: int | None) -> None:
    """End ``attempt`` with the directory's ``outcome``, once its accounting is written.

    (A broker on PostgreSQL writes it in a thread, and the caller hears the answer after.)
    """
    policy.end(attempt, outcome)
    if attempt.landing is not None:
        await attempt.landing


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
