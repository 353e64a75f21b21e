"""Several brokers on one store decide as one: counters and checks in flight are shared.

Each "broker" here is a :class:`SignInPolicy` with a :class:`SharedLedger` on its own handle
of one real store, as separate processes have; guesses spread over them must get exactly what
one broker allows. (The same tests with each policy's counters in its own memory would let
through a threshold's worth of guesses per broker.)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from broker.policy.lockout_gate import FLIGHT_MARGIN
from broker.policy.recent_failures import Repeat
from broker.policy.shared_challenges import SharedChallenges
from broker.policy.signin_policy import SignInPolicy, Verdict
from pta.errors import ChallengeExpired
from tests.broker.policy.helpers import (
    ALICE_KEY,
    DOMAIN,
    RIGHT,
    TENANT,
    FakeClock,
    Phone,
    admitted,
    begin,
    configure,
    ended,
    fail,
    failures,
    make_policy,
    open_challenge,
    refused,
)
from tests.broker.policy.helpers import Outcome as Result
from tests.broker.store.backends import BACKENDS

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from broker.policy import mfa
    from broker.policy.signing import TokenSigner
    from broker.store.protocols import Store
    from broker.store.records import UserLockout

BROKERS = 3


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens handles on one fresh store of each implementation."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def store(opener: Callable[[], Store]) -> Iterator[Store]:
    """The store, the tenant acme owning example.com."""
    store = opener()
    store.add_tenant(TENANT, [DOMAIN])
    yield store
    store.close()


@pytest.fixture
def brokers(
    opener: Callable[[], Store],
    store: Store,  # noqa: ARG001 - the tenant exists before the brokers start
    signer: TokenSigner,
    clock: FakeClock,
    mfa_key: mfa.MfaKey,
) -> Iterator[list[SignInPolicy]]:
    """Three policies, each on its own handle of the one store, counters in the store."""
    handles = [opener() for _ in range(BROKERS)]
    policies = [
        make_policy(
            h,
            signer,
            clock,
            shared=True,
            mfa_key=mfa_key,
            challenges=SharedChallenges(h.policy, clock=clock),
        )
        for h in handles
    ]
    yield policies
    for handle in handles:
        handle.close()


def configure_all(store: Store, brokers: list[SignInPolicy], **changes: object) -> None:
    """Set acme's policy once; every broker re-reads it."""
    for broker in brokers:
        configure(store, broker, **changes)


class TestGuessesSpreadOverBrokers:
    """The threshold is the cluster's, not each broker's."""

    async def test_lock_comes_down_at_the_threshold(
        self, store: Store, brokers: list[SignInPolicy]
    ) -> None:
        """Three wrong passwords, one at each broker, lock alice everywhere (threshold 3)."""
        configure_all(store, brokers, lockout_threshold=3)
        for broker in brokers:
            await fail(broker, 1)
        assert failures(store) == 3
        for broker in brokers:
            assert (await refused(broker, RIGHT)).outcome == Result.LOCKED_BY_POLICY

    async def test_checks_in_flight_count_at_every_broker(
        self, store: Store, brokers: list[SignInPolicy]
    ) -> None:
        """Two checks in flight at one broker (threshold 2): another broker's third waits.

        Both are refused by the directory: the waiting one is then answered as locked,
        without ever reaching the directory.
        """
        configure_all(store, brokers, lockout_threshold=2)
        first, second = brokers[0], brokers[1]
        flying = [await admitted(first, f"Wrong-{n}") for n in range(2)]
        third = asyncio.create_task(begin(second, "Wrong-third"))
        await asyncio.sleep(0.2)
        assert not third.done()
        for attempt in flying:
            first.end(attempt, Result.INVALID_CREDENTIALS)
        answer = await asyncio.wait_for(third, 2)
        assert isinstance(answer, Verdict)
        assert answer.outcome == Result.LOCKED_BY_POLICY

    async def test_a_success_anywhere_clears_the_count(
        self, store: Store, brokers: list[SignInPolicy]
    ) -> None:
        """Two wrong at one broker, the right password at another: the count starts again."""
        configure_all(store, brokers, lockout_threshold=3)
        await fail(brokers[0], 2)
        await ended(brokers[1], await admitted(brokers[1], RIGHT), Result.SUCCESS)
        assert failures(store) == 0
        assert failures(store, "directory") == 0


class TestRepeatsAcrossBrokers:
    """One wrong password typed at two brokers is one guess."""

    async def test_a_repeat_elsewhere_is_not_counted(
        self, store: Store, brokers: list[SignInPolicy]
    ) -> None:
        """Refused at the first broker, typed again at the second: answered there, uncounted."""
        [password] = await fail(brokers[0], 1)
        verdict = await refused(brokers[1], password)
        assert (verdict.outcome, verdict.decided_by) == (Result.INVALID_CREDENTIALS, "repeat")
        assert failures(store) == 1

    async def test_an_unlock_forgets_them_everywhere(
        self, store: Store, brokers: list[SignInPolicy]
    ) -> None:
        """An administrator's unlock clears the count and the refused passwords at once."""
        configure_all(store, brokers, lockout_threshold=2)
        passwords = await fail(brokers[0], 2)
        assert (await refused(brokers[2], RIGHT)).outcome == Result.LOCKED_BY_POLICY
        store.policy.clear_counters(TENANT, ALICE_KEY)
        await admitted(brokers[2], passwords[-1])

    async def test_a_wrong_password_is_a_repeat_when_it_is_counted(
        self, store: Store, brokers: list[SignInPolicy], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every broker learns the password as refused in the step that counts it.

        A check deciding between the two (another broker's, or one polling for its turn)
        saw it counted but not refused, took it for a new guess and, with the directory
        guard's count full, refused the user (CI: a load of one unknown name at two brokers).
        So the repeat and the count are written by one decision, never one before the other.
        """
        first, other = brokers[0], brokers[1]
        attempt = await admitted(first, "Wrong-once")
        key = f"{TENANT}\0{ALICE_KEY}"
        digests = other.gate.recent.digests(key, "Wrong-once")
        seen: list[tuple[Repeat, int]] = []
        later = first.gate.ledger.later

        def look() -> None:
            repeat = other.gate.ledger.run(
                TENANT, ALICE_KEY, lambda s: other.gate.recent.check_in(s, key, digests)
            )
            seen.append((repeat, failures(store)))

        def watching(
            tenant: str,
            user: str,
            work: Callable[[UserLockout], object],
            then: Callable[[concurrent.futures.Future[object]], None],
        ) -> object:
            look()

            def after(outcome: concurrent.futures.Future[object]) -> None:
                look()
                then(outcome)

            return later(tenant, user, work, after)

        monkeypatch.setattr(first.gate.ledger, "later", watching)
        await ended(first, attempt, Result.INVALID_CREDENTIALS)
        assert seen == [(Repeat.NO, 0), (Repeat.REFUSED, 1)]


class TestAFlightWhoseBrokerDied:
    """A check admitted at a broker that died counts once its flight expires."""

    async def test_counts_toward_the_directory_guard(
        self,
        store: Store,
        brokers: list[SignInPolicy],
        clock: FakeClock,
    ) -> None:
        """The dead broker's flight holds a place until it expires, then counts as sent."""
        dead, alive = brokers[0], brokers[1]
        await admitted(dead, "Wrong-lost")  # Its broker never ends it.
        flights = store.policy.with_user(TENANT, ALICE_KEY, lambda s: dict(s.flights))
        assert [f.location for f in flights.values()] == ["unfamiliar"]
        clock.now += 5 + FLIGHT_MARGIN + 1
        await ended(alive, await admitted(alive, "Wrong-next"), Result.INVALID_CREDENTIALS)
        assert failures(store, "directory") == 2
        assert failures(store) == 1
        assert store.policy.with_user(TENANT, ALICE_KEY, lambda s: dict(s.flights)) == {}


class TestSecondFactorAcrossBrokers:
    """A challenge opened at one broker is completed at another, its tries counted once."""

    async def test_completed_elsewhere(
        self, store: Store, brokers: list[SignInPolicy], phone: Phone
    ) -> None:
        """The password at the first broker, the code at the second: a token."""
        configure_all(store, brokers, mfa="always")
        challenge_id = await open_challenge(brokers[0])
        verdict, challenge = brokers[1].complete(challenge_id, phone.code())
        assert verdict.outcome == Result.SUCCESS
        assert verdict.methods == ("pwd", "otp")
        assert challenge.request_id == "req-mfa"
        with pytest.raises(ChallengeExpired):  # Closed everywhere once answered.
            brokers[2].complete(challenge_id, phone.code(1))

    async def test_tries_are_the_clusters(
        self, store: Store, brokers: list[SignInPolicy], phone: Phone
    ) -> None:
        """Three wrong codes, one at each broker, use the challenge up (it allows three)."""
        configure_all(store, brokers, mfa="always")
        challenge_id = await open_challenge(brokers[0])
        for broker in brokers:
            verdict, _ = broker.complete(challenge_id, phone.wrong_code())
            assert verdict.outcome == Result.INVALID_CREDENTIALS
        with pytest.raises(ChallengeExpired):
            brokers[0].complete(challenge_id, phone.code())
