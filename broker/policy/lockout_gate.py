"""The lockout gate: which checks of a user may reach the directory, and what they cost.

Before a check: a user locked out from this kind of location, a password refused moments ago,
or one more wrong password than the directory would take (the directory guard) is answered
here, and as many checks of one user run at once as may still fail before the lockout comes
down; the rest wait their turn. After it: only wrong passwords count, a lost try counts toward
the guard, a right password starts the directory's count again. Pure arithmetic is in
:mod:`broker.policy.lockout`; this is its state.

Each decision runs under the user's lock in a :mod:`~broker.policy.lockout_ledger` (memory
for one broker, the shared store for several): it reads the user's counters and the checks
of the user in flight, and admits a check by recording it as a *flight*, which its end
lands. A flight nobody lands by its expiry (its broker died with it) counts as a wrong
password the directory may have seen, like a check whose agent was lost.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from typing import TYPE_CHECKING

import structlog

from broker.dispatch.jobs import MAY_HAVE_TRIED
from broker.metrics import OFF
from broker.policy import lockout
from broker.policy.directory_thresholds import DirectoryThresholds
from broker.policy.lockout_ledger import Ledger, MemoryLedger
from broker.policy.recent_failures import RecentFailures, Repeat, RepeatMemory
from broker.policy.user_turns import UserTurns
from broker.policy.verdicts import (
    ACCOUNT_EXISTS,
    PASSWORD_RIGHT,
    REPEATED,
    WRONG,
    Attempt,
    Outcome,
    Verdict,
    guarded,
    locked,
)
from broker.store.records import Flight
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from broker.metrics import Counts
    from broker.policy.tenant_policy import TenantPolicy
    from broker.store.policy_store import PolicyStore
    from broker.store.records import CounterKey, Location, UserLockout

log = structlog.get_logger()
#: Counters kept of accounts no directory said exist; past this the oldest are forgotten.
MAX_COUNTERS = 200_000
#: A flight outlives its sign-in's deadline by this much before it counts as lost: an agent
#: answers before the deadline (it refuses to check later), so only a dead broker gets here.
FLIGHT_MARGIN = 10.0


class LockoutGate:
    """Counters, checks in flight, directory thresholds and the repeat memory, for every tenant."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        recent: RepeatMemory | None = None,
        clock: Callable[[], float] = time.time,
        max_counters: int | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        """Load the accounts known to exist; keep the counters in ``ledger``.

        ``ledger``: where each user's counters and flights live (default: this process's
        memory, written through to ``store``, with at most ``max_counters`` (default
        :data:`MAX_COUNTERS`) counters of names no directory has said exist).
        """
        self._store = store
        self.recent: RepeatMemory = RecentFailures() if recent is None else recent
        self._clock = clock
        #: (tenant, account) a directory answered for lately: their counters are never shed.
        self._known = store.known_accounts()
        self.ledger: Ledger = ledger or MemoryLedger(
            store,
            known=lambda: self._known,
            clock=clock,
            max_counters=MAX_COUNTERS if max_counters is None else max_counters,
        )
        self.turns = UserTurns()
        #: Where locks are counted for operators (the broker's metrics, when on).
        self.metrics: Counts = OFF
        #: What each tenant's agents said of their directories' own lockout.
        self.thresholds = DirectoryThresholds()

    @property
    def counters(self) -> dict[CounterKey, lockout.Counter]:
        """The counters held in memory (one broker on its own store).

        Raises:
            TypeError: When the counters live in a shared store instead.
        """
        if not isinstance(self.ledger, MemoryLedger):
            raise TypeError("the counters live in the shared store")
        return self.ledger.counters

    def reload(self) -> None:
        """Re-read the counters the CLI may have cleared; an unlocked user's repeats go too."""
        for tenant, user in sorted(self.ledger.reload()):
            self.recent.forget(f"{tenant}\0{user}")
            log.info("lockout.cleared", tenant=tenant, user=user)

    def upkeep(self, policy_of: Callable[[str], TenantPolicy]) -> None:
        """Forget counters and known accounts no rule needs any more."""
        now = self._clock()
        self._store.forget_counters_before(now - lockout.FORGET_AFTER)
        self._store.forget_repeats_before(now)
        self.ledger.upkeep(lambda key, c: lockout.current(c, policy_of(key[0]).lockout, now) is c)
        self._store.forget_known_accounts_before(now - lockout.FORGET_AFTER)
        self._known = self._store.known_accounts()

    def locked_for(self, key: CounterKey, rule: lockout.LockoutRule) -> float:
        """Seconds the counter ``key`` still locks for (0: not locked)."""
        tenant, user, kind = key
        now = self._clock()
        counter = self.ledger.run(tenant, user, lambda state: state.counters.get(kind))
        return lockout.locked_for(lockout.current(counter or lockout.CLEAN, rule, now), now)

    def succeed(self, key: CounterKey, user: str) -> None:
        """A full success from one kind of location: its counter and the repeats are cleared."""
        tenant, account, kind = key
        self.ledger.run(tenant, account, lambda state: state.counters.pop(kind, None))
        self.recent.forget(user)

    async def admit(
        self, attempt: Attempt, password: str | None, deadline: float
    ) -> Verdict | None:
        """Wait for the attempt's turn; None once admitted (counted in flight), or the refusal.

        ``password`` is looked up in the repeat memory (None: not again, a retried check).
        """
        tenant, user = attempt.tenant, attempt.user
        key = f"{tenant}\0{user}"
        budget = self.thresholds.budget(tenant, attempt.domain, attempt.location)
        loop = asyncio.get_running_loop()
        while True:
            remaining = max(0.0, deadline - loop.time())
            now = self._clock()
            # Taken again each turn (the memory's key may have rotated while this waited).
            # None: a readmission, which keeps what was found.
            digests = None if password is None else self.recent.digests(key, password)
            decided = await self.ledger.decide(
                tenant,
                user,
                functools.partial(
                    self._decide,
                    attempt=attempt,
                    budget=budget,
                    digests=digests,
                    now=now,
                    expires=now + remaining + FLIGHT_MARGIN,
                ),
            )
            if decided is not False:
                return None if decided is True else decided
            await self.turns.wait((tenant, user), deadline, self.ledger.poll)

    def _decide(  # noqa: PLR0913 - one decision's facts
        self,
        state: UserLockout,
        *,
        attempt: Attempt,
        budget: int | None,
        digests: tuple[bytes, ...] | None,
        now: float,
        expires: float,
    ) -> Verdict | bool:
        """Under the user's lock: a refusal, True once admitted (in flight), False to wait.

        ``digests``: the password's, to look up in the repeat memory (None: not again).
        """
        seen = Repeat.NO
        if digests is not None:
            seen = self.recent.check_in(state, f"{attempt.tenant}\0{attempt.user}", digests)
            attempt.digest = digests[0]
            # Refused as an unknown name: asked again (a misconfigured directory may have
            # said so), counted only if the answer differs (see end).
            attempt.recheck = seen == Repeat.UNKNOWN_NAME
        rule = attempt.policy.lockout
        self._land_expired(attempt, state, now)
        counter = lockout.current(state.counters.get(attempt.location, lockout.CLEAN), rule, now)
        if (wait := lockout.locked_for(counter, now)) > 0:
            return locked(wait)
        pending = sum(f.location == attempt.location for f in state.flights.values())
        in_flight = len(state.flights)
        sent = lockout.current(state.counters.get("directory", lockout.CLEAN), rule, now)
        full = budget is not None and sent.failures + in_flight >= budget
        # A repeat is answered here, as ever; one refused as an unknown name is asked again
        # only while the guard has room (the name may exist by now), never refused by it.
        if seen == Repeat.REFUSED or (attempt.recheck and full):
            return REPEATED
        if full:
            if not in_flight:
                return guarded(sent.last_failure + rule.forget_after - now)
        elif pending < lockout.attempts_left(counter, rule):
            attempt.flight = secrets.token_hex(8)
            state.flights[attempt.flight] = Flight(attempt.location, expires)
            return True
        return False

    def _land_expired(self, attempt: Attempt, state: UserLockout, now: float) -> None:
        """Count the flights nobody landed in time as tries the directory may have seen."""
        for flight_id, flight in list(state.flights.items()):
            if flight.expires_at <= now:
                del state.flights[flight_id]
                _count_sent(state, attempt.policy.lockout, now)
                log.warning(
                    "lockout.flight_expired",
                    tenant=attempt.tenant,
                    user=attempt.user,
                    location=flight.location,
                )

    async def readmit(self, attempt: Attempt, deadline: float) -> bool:
        """Let an attempt whose agent was lost after it may have tried it go to another agent.

        :meth:`end` counted the lost try as one the directory may have seen. The second try
        is admitted like a new check of the user: when the lost one and every other check in
        flight, all wrong, would still leave the directory one short of its lockout; it waits
        while other checks of the user run (each may free room: a right password starts the
        directory's count again). Never when the directory's threshold is unknown.

        Returns:
            True once admitted (end it again with :meth:`end`); False when there is no room
            (or the user is locked now), or nothing bounds a second try.

        Raises:
            DeadlineExceeded: When the deadline passes while other checks of the user run.
            Overloaded: When too many sign-ins of the user wait already.
        """
        rule = attempt.policy.lockout
        if not rule.enabled or not self.thresholds.known(attempt.tenant, attempt.domain):
            return False
        if await self.admit(attempt, None, deadline) is not None:
            return False
        attempt.ended = False
        return True

    def end(self, attempt: Attempt, outcome: int | None, *, succeed: bool = False) -> bool:
        """Count what the directory said about an attempt (``None``: no answer at all).

        Only wrong passwords count. An answer that proves the password right starts the
        directory's count again and forgets refused passwords; with ``succeed`` (the caller
        knows no second factor is still to come) it is a full success too, and the counter of
        its kind of location is cleared in the same step. Returns whether the password proved
        right (the first end only).
        :data:`~broker.dispatch.jobs.MAY_HAVE_TRIED` (the agent was lost after it may have tried
        the password) counts toward the directory guard only: the directory may have seen a
        wrong password; the user's own lockout and the repeat memory learn nothing from it.
        """
        if attempt.ended:
            return False
        attempt.ended = True
        rule = attempt.policy.lockout
        if not rule.enabled:
            return False
        tenant, user = attempt.tenant, attempt.user
        right = outcome in PASSWORD_RIGHT
        now = self._clock()

        def landed(settled: concurrent.futures.Future[bool]) -> None:
            try:
                if settled.result():
                    self.metrics.lockout(tenant, attempt.location)
            except StoreUnavailable as error:
                # The answer stands; its flight stays in the store and, once it expires,
                # counts as a wrong password the directory may have seen: never fewer guesses
                # than made.
                log.warning("lockout.not_recorded", tenant=tenant, user=user, detail=error.detail)
            finally:
                self.turns.wake(tenant, user)

        self._confirm(tenant, user, outcome)
        attempt.landing = self.ledger.later(
            tenant,
            user,
            functools.partial(
                self._settle, attempt=attempt, outcome=outcome, succeed=right and succeed, now=now
            ),
            landed,
        )
        return right

    def _remember(self, state: UserLockout, attempt: Attempt, outcome: int | None) -> None:
        """What the repeat memory learns from the directory's answer to ``attempt``."""
        key = f"{attempt.tenant}\0{attempt.user}"
        if outcome in WRONG and not (attempt.recheck and outcome == Outcome.UNKNOWN_USER):
            self.recent.add_in(state, key, attempt.digest, known=outcome != Outcome.UNKNOWN_USER)
        elif outcome in PASSWORD_RIGHT:
            # The directory just took a password: one refused before may be the new one
            # (a user who tried it, then changed to it).
            self.recent.forget_in(state, key)

    def _settle(
        self,
        state: UserLockout,
        *,
        attempt: Attempt,
        outcome: int | None,
        succeed: bool,
        now: float,
    ) -> bool:
        """Under the user's lock: land the attempt's flight and count what it said.

        The repeat memory learns from the answer in the same step: a check of the user
        deciding meanwhile (at another broker, or polling here) must never see the password
        counted and not yet a repeat. It would take the directory guard's room as a new
        guess, and be refused when the count is full. Returns whether the user's counter
        locked just now.
        """
        self._remember(state, attempt, outcome)
        state.flights.pop(attempt.flight, None)
        rule = attempt.policy.lockout
        if outcome in PASSWORD_RIGHT:
            state.counters.pop("directory", None)  # The directory's own count starts again.
            if succeed:
                state.counters.pop(attempt.location, None)
        elif outcome in WRONG or outcome == MAY_HAVE_TRIED:
            if attempt.recheck and outcome == Outcome.UNKNOWN_USER:
                return False  # The same answer to the same password: as any repeat.
            locked = False
            if outcome != MAY_HAVE_TRIED:  # A lost try says nothing of the password.
                _, locked = self._fail(
                    state,
                    tenant=attempt.tenant,
                    user=attempt.user,
                    kind=attempt.location,
                    rule=rule,
                    now=now,
                )
            _count_sent(state, rule, now)
            return locked
        return False

    def _confirm(self, tenant: str, user: str, outcome: int | None) -> None:
        """Remember an account a directory answered for: its counters are never shed."""
        if outcome in ACCOUNT_EXISTS and (tenant, user) not in self._known:
            self._known.add((tenant, user))
            now = self._clock()

            def write() -> None:
                try:
                    self._store.add_known_account(tenant, user, now)
                except StoreUnavailable as error:  # Known here; upkeep's next read forgets it.
                    log.warning(
                        "lockout.not_recorded", tenant=tenant, user=user, detail=error.detail
                    )

            self.ledger.aside(write)

    def fail(self, key: CounterKey, rule: lockout.LockoutRule) -> lockout.Counter:
        """Count a wrong password or code against ``key``; log when it locks; the new counter."""
        tenant, user, kind = key
        if kind == "directory":
            raise ValueError("the directory's count is kept by end(), not fail()")
        now = self._clock()
        counter, locked = self.ledger.run(
            tenant,
            user,
            functools.partial(self._fail, tenant=tenant, user=user, kind=kind, rule=rule, now=now),
        )
        if locked:
            self.metrics.lockout(tenant, kind)
        return counter

    @staticmethod
    def _fail(  # noqa: PLR0913 - one count's facts
        state: UserLockout,
        *,
        tenant: str,
        user: str,
        kind: Location,
        rule: lockout.LockoutRule,
        now: float,
    ) -> tuple[lockout.Counter, bool]:
        """The new counter, and whether it just locked."""
        before = state.counters.get(kind, lockout.CLEAN)
        counter = lockout.fail(before, rule, now)
        if counter is before:
            return counter, False
        state.counters[kind] = counter
        locked = counter.lockouts > before.lockouts
        if locked:
            log.warning(
                "lockout.locked",
                tenant=tenant,
                user=user,
                location=kind,
                failures=counter.failures,
                seconds=round(counter.locked_until - now),
            )
        return counter, locked


def _count_sent(state: UserLockout, rule: lockout.LockoutRule, now: float) -> None:
    """One more wrong password the directory has (or may have) seen since it last took one."""
    sent = lockout.current(state.counters.get("directory", lockout.CLEAN), rule, now)
    state.counters["directory"] = lockout.Counter(failures=sent.failures + 1, last_failure=now)
