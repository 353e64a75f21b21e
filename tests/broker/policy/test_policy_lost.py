"""``SignInPolicy.lost``: a sign-in whose agent died after it may have tried the password.

The lost try is counted as one the directory may have seen; another agent may try again only
while that cannot bring the directory's count to its lockout. Real store and policy, fake clock.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from broker.dispatch.jobs import MAY_HAVE_TRIED
from broker.policy.recent_failures import RecentFailures
from broker.policy.signin_policy import Attempt, SignInPolicy, user_key
from broker.policy.signing import TokenSigner
from broker.store.records import DirectoryPolicyRecord
from pta.names import parse_upn
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from broker.store.protocols import Store
    from tests.broker.policy.helpers import FakeClock

Outcome = outcome_pb2.Outcome
TENANT = "acme"
DOMAIN = "example.com"
ALICE = parse_upn("alice@example.com")
ELSEWHERE = "203.0.113.7"


@pytest.fixture
def policy(store: Store, tmp_path: Path, clock: FakeClock) -> SignInPolicy:
    """The policy under test (default lockout: threshold 10), on the folder's fake clock."""
    return SignInPolicy(
        store.policy,
        TokenSigner(tmp_path, issuer="test", clock=clock),
        recent=RecentFailures(clock=clock),
        clock=clock,
    )


def reported(policy: SignInPolicy, threshold: int, *, known: bool = True) -> None:
    """An agent reports example.com's directory lockout threshold."""
    policy.directory_reported(
        TENANT,
        [
            DirectoryPolicyRecord(
                tenant=TENANT,
                domain=DOMAIN,
                agent_id="agent-a",
                known=known,
                lockout_threshold=threshold,
                source="test",
                reported_at=0.0,
            )
        ],
    )


def deadline() -> float:
    """An event-loop deadline a few seconds away."""
    return asyncio.get_running_loop().time() + 5


async def admitted(policy: SignInPolicy, password: str) -> Attempt:
    """An attempt the policy lets through."""
    result = await policy.begin(TENANT, ALICE, password, ELSEWHERE, deadline=deadline())
    assert isinstance(result, Attempt), result
    return result


def sent(store: Store) -> int:
    """Wrong passwords the directory may have counted for alice, as stored."""
    counter = store.policy.counters().get((TENANT, user_key(ALICE), "directory"))
    return 0 if counter is None else counter.failures


class TestLost:
    """The lost try is counted; a second one is admitted only within the guard's bound."""

    async def test_retry_allowed_with_room(self, store: Store, policy: SignInPolicy) -> None:
        """Directory locks at 5 (budget 3 from elsewhere): a lost first try may go again."""
        reported(policy, 5)
        attempt = await admitted(policy, "Lost-1")
        policy.end(attempt, MAY_HAVE_TRIED)
        assert sent(store) == 1
        assert await policy.readmit(attempt, deadline())
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        assert sent(store) == 2, "both tries may have reached the directory"

    async def test_retry_refused_at_the_budget(self, store: Store, policy: SignInPolicy) -> None:
        """Two wrong already sent, one lost now: a second try could be the directory's 4th."""
        reported(policy, 5)
        for password in ("Wrong-a", "Wrong-b"):
            policy.end(await admitted(policy, password), Outcome.INVALID_CREDENTIALS)
        attempt = await admitted(policy, "Lost-2")
        policy.end(attempt, MAY_HAVE_TRIED)
        assert not await policy.readmit(attempt, deadline())
        assert sent(store) == 3, "the lost try stays counted"

    async def test_retry_waits_for_checks_in_flight(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """No room while two other checks run; one of them is right: room again, admitted.

        The directory locks at 5, so from elsewhere 3 may be in its count at once: the lost
        try (1) and two checks in flight leave no room for a second try until one ends.
        """
        reported(policy, 5)
        others = [await admitted(policy, "Other-1"), await admitted(policy, "Other-2")]
        attempt = await admitted(policy, "Lost-3")
        policy.end(attempt, MAY_HAVE_TRIED)
        waiting = asyncio.create_task(policy.readmit(attempt, deadline()))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        policy.end(others[0], Outcome.SUCCESS)  # The directory's count starts again.
        assert await waiting
        assert sent(store) == 0
        policy.end(others[1], Outcome.INVALID_CREDENTIALS)
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)
        assert sent(store) == 2

    async def test_right_password_after_retry_clears(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """The retry finds the password right: the directory's count starts again."""
        reported(policy, 5)
        attempt = await admitted(policy, "Right-1")
        policy.end(attempt, MAY_HAVE_TRIED)
        assert await policy.readmit(attempt, deadline())
        policy.end(attempt, Outcome.SUCCESS)
        assert sent(store) == 0

    async def test_lost_try_is_not_a_wrong_password(
        self, store: Store, policy: SignInPolicy
    ) -> None:
        """The user's own lockout and the repeat memory learn nothing from a lost try."""
        reported(policy, 5)
        attempt = await admitted(policy, "Maybe-1")
        policy.end(attempt, MAY_HAVE_TRIED)
        user = user_key(ALICE)
        assert (TENANT, user, "unfamiliar") not in store.policy.counters()
        again = await admitted(policy, "Maybe-1")  # Not answered as a repeat.
        policy.end(again, Outcome.SUCCESS)

    async def test_unknown_threshold_no_retry(self, policy: SignInPolicy) -> None:
        """Nothing bounds a second try when the directory's lockout is unknown."""
        reported(policy, 5, known=False)
        attempt = await admitted(policy, "Lost-4")
        policy.end(attempt, MAY_HAVE_TRIED)
        assert not await policy.readmit(attempt, deadline())

    async def test_directory_that_never_locks(self, policy: SignInPolicy) -> None:
        """A directory known never to lock: a second try costs nothing there."""
        reported(policy, 0)
        attempt = await admitted(policy, "Lost-5")
        policy.end(attempt, MAY_HAVE_TRIED)
        assert await policy.readmit(attempt, deadline())
        policy.end(attempt, Outcome.INVALID_CREDENTIALS)


class TestLostRepeatOfUnknownName:
    """A repeat of an unknown name's refusal, lost: no room means 'answer as a repeat'."""

    async def test_readmission_keeps_the_recheck(self, store: Store, policy: SignInPolicy) -> None:
        """The guard full after the lost try: refused, and still marked a recheck."""
        reported(policy, 5)  # Budget from elsewhere: 3.
        for n in range(2):
            policy.end(await admitted(policy, f"Nobody-{n}"), Outcome.UNKNOWN_USER)
        again = await admitted(policy, "Nobody-0")
        assert again.recheck
        policy.end(again, MAY_HAVE_TRIED)
        assert sent(store) == 3
        assert not await policy.readmit(again, deadline())
        assert again.recheck, "the signin service answers it as a repeat, not UNAVAILABLE"
