"""The lockout gate: which checks of a user may reach the directory, and what they cost.

Before a check: a user locked out from this kind of location, a password refused moments ago,
or one more wrong password than the directory would take (the directory guard) is answered
here, and as many checks of one user run at once as may still fail before the lockout comes
down; the rest wait their turn. After it: only wrong passwords count, a lost try counts toward
the guard, a right password starts the directory's count again. Counters live in memory for
the hot path and are written through to the store; memory is bounded by shedding counters of
names no directory said exist. Pure arithmetic is in :mod:`broker.policy.lockout`; this is
its state.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from broker.dispatch.jobs import MAY_HAVE_TRIED
from broker.policy import lockout
from broker.policy.recent_failures import RecentFailures, Repeat
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
from broker.store.records import LOCATIONS
from pta.errors import DeadlineExceeded, Overloaded

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from broker.policy.tenant_policy import TenantPolicy
    from broker.store.protocols import PolicyStore
    from broker.store.records import CounterKey, DirectoryPolicyRecord, Location

log = structlog.get_logger()
#: Sign-ins of one user waiting their turn; more are refused (each wake-up wakes them all).
MAX_WAITING_PER_USER = 32
#: Counters kept of accounts no directory said exist; past this the oldest are forgotten.
MAX_COUNTERS = 200_000


class LockoutGate:
    """Counters, checks in flight, directory thresholds and the repeat memory, for every tenant."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        recent: RecentFailures | None = None,
        clock: Callable[[], float] = time.time,
        max_counters: int | None = None,
    ) -> None:
        """Load the counters and the accounts known to exist from the store.

        ``max_counters`` (default :data:`MAX_COUNTERS`) bounds the counters of names no
        directory has said exist (see :meth:`_shed`).
        """
        self._store = store
        self.recent = RecentFailures() if recent is None else recent
        self._clock = clock
        self._max_counters = MAX_COUNTERS if max_counters is None else max_counters
        self._shed_above = self._max_counters
        #: (tenant, account) a directory answered for lately: their counters are never shed.
        self._known = store.known_accounts()
        self._pending: dict[CounterKey, int] = {}
        self._waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}
        self.counters: dict[CounterKey, lockout.Counter] = store.counters()
        #: tenant -> domain -> the lowest threshold its agents reported (0: known never to lock;
        #: absent: unknown); and each report.
        self.directory: dict[str, dict[str, int]] = {}
        self._reports: dict[str, dict[tuple[str, str], int]] = {}

    def reload(self) -> None:
        """Re-read the counters the CLI may have cleared; an unlocked user's repeats go too."""
        before = set(self.counters)
        self.counters = self._store.counters()
        for tenant, user in sorted({(t, u) for t, u, _ in before - set(self.counters)}):
            self.recent.forget(f"{tenant}\0{user}")
            log.info("lockout.cleared", tenant=tenant, user=user)

    def upkeep(self, policy_of: Callable[[str], TenantPolicy]) -> None:
        """Forget counters and known accounts no rule needs any more."""
        now = self._clock()
        self._store.forget_counters_before(now - lockout.FORGET_AFTER)
        self.counters = {
            key: c
            for key, c in self.counters.items()
            if lockout.current(c, policy_of(key[0]).lockout, now) is c
        }
        self._store.forget_known_accounts_before(now - lockout.FORGET_AFTER)
        self._known = self._store.known_accounts()
        self._shed_above = max(self._max_counters, len(self.counters) + self._max_counters // 10)

    def locked_for(self, key: CounterKey, rule: lockout.LockoutRule) -> float:
        """Seconds the counter ``key`` still locks for (0: not locked)."""
        now = self._clock()
        counter = lockout.current(self.counters.get(key, lockout.CLEAN), rule, now)
        return lockout.locked_for(counter, now)

    def succeed(self, key: CounterKey, user: str) -> None:
        """A full success from one kind of location: its counter and the repeats are cleared."""
        self.save(key, lockout.CLEAN)
        self.recent.forget(user)

    async def admit(
        self, attempt: Attempt, password: str | None, deadline: float
    ) -> Verdict | None:
        """Wait for the attempt's turn; None once admitted (counted in flight), or the refusal.

        ``password`` is looked up in the repeat memory (None: not again, a retried check).
        """
        tenant, user, rule = attempt.tenant, attempt.user, attempt.policy.lockout
        key: CounterKey = (tenant, user, attempt.location)
        budget = self._directory_budget(tenant, attempt.domain, attempt.location)
        while True:
            now = self._clock()
            counter = lockout.current(self.counters.get(key, lockout.CLEAN), rule, now)
            if (wait := lockout.locked_for(counter, now)) > 0:
                return locked(wait)
            seen = Repeat.NO
            if password is not None:  # (None: a readmission, which keeps what was found.)
                seen, attempt.digest = self.recent.check(f"{tenant}\0{user}", password)
                # Refused as an unknown name: asked again (a misconfigured directory may have
                # said so), counted only if the answer differs (see end).
                attempt.recheck = seen == Repeat.UNKNOWN_NAME
            pending = self._pending.get(key, 0)
            in_flight = sum(self._pending.get((tenant, user, kind), 0) for kind in LOCATIONS)
            sent = lockout.current(
                self.counters.get((tenant, user, "directory"), lockout.CLEAN), rule, now
            )
            full = budget is not None and sent.failures + in_flight >= budget
            # A repeat is answered here, as ever; one refused as an unknown name is asked again
            # only while the guard has room (the name may exist by now), never refused by it.
            if seen == Repeat.REFUSED or (attempt.recheck and full):
                return REPEATED
            if full:
                if not in_flight:
                    return guarded(sent.last_failure + rule.forget_after - now)
            elif pending < lockout.attempts_left(counter, rule):
                self._pending[key] = pending + 1
                return None
            await self._wait_turn((tenant, user), deadline)

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
        if not rule.enabled or attempt.domain not in self.directory.get(attempt.tenant, {}):
            return False
        if await self.admit(attempt, None, deadline) is not None:
            return False
        attempt.ended = False
        return True

    async def _wait_turn(self, key: tuple[str, str], deadline: float) -> None:
        """Wait until a check of the user ``key`` (tenant, user) is answered.

        Raises:
            DeadlineExceeded: When ``deadline`` (event-loop time) passes first.
            Overloaded: When too many wait for this user already.
        """
        waiters = self._waiters.setdefault(key, [])
        if len(waiters) >= MAX_WAITING_PER_USER:
            raise Overloaded("too many sign-ins of this user at once; try again")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except TimeoutError:
            raise DeadlineExceeded("earlier sign-ins of this user took too long") from None
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

    def end(self, attempt: Attempt, outcome: int | None) -> bool:
        """Count what the directory said about an attempt (``None``: no answer at all).

        Only wrong passwords count. An answer that proves the password right starts the
        directory's count again and forgets refused passwords; the caller then decides whether
        it is a full success (the counter of its kind of location cleared) or a second factor
        is still to come. Returns whether the password proved right (the first end only).
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
        self._confirm(attempt.tenant, attempt.user, outcome)
        key = (attempt.tenant, attempt.user, attempt.location)
        pending = self._pending.pop(key, 1) - 1
        if pending > 0:
            self._pending[key] = pending
        for waiter in self._waiters.pop((attempt.tenant, attempt.user), ()):
            if not waiter.done():
                waiter.set_result(None)
        sent_key: CounterKey = (attempt.tenant, attempt.user, "directory")
        if outcome in WRONG or outcome == MAY_HAVE_TRIED:
            self._count_wrong(attempt, outcome, key)
        elif outcome in PASSWORD_RIGHT:
            # The directory just took a password: its own count of failures starts again, and
            # one refused before may be the new one (a user who tried it, then changed to it).
            self.recent.forget(f"{attempt.tenant}\0{attempt.user}")
            self.save(sent_key, lockout.CLEAN)
            return True
        return False

    def _count_wrong(self, attempt: Attempt, outcome: int, key: CounterKey) -> None:
        """A wrong password, an unknown name, or a lost try that may have been either."""
        if attempt.recheck and outcome == Outcome.UNKNOWN_USER:
            return  # The same answer to the same password: not a new guess, as any repeat.
        rule = attempt.policy.lockout
        if outcome != MAY_HAVE_TRIED:  # A lost try says nothing of the password.
            known = outcome != Outcome.UNKNOWN_USER
            self.recent.add(f"{attempt.tenant}\0{attempt.user}", attempt.digest, known=known)
            self.fail(key, rule)
        sent_key: CounterKey = (attempt.tenant, attempt.user, "directory")
        now = self._clock()
        sent = lockout.current(self.counters.get(sent_key, lockout.CLEAN), rule, now)
        self.save(sent_key, lockout.Counter(failures=sent.failures + 1, last_failure=now))

    def directory_reported(self, tenant: str, reports: Iterable[DirectoryPolicyRecord]) -> None:
        """Remember what an agent said of its directories' own lockout (the lowest one wins)."""
        by_agent = self._reports.setdefault(tenant, {})
        for report in reports:
            key = (report.domain, report.agent_id)
            if report.known:
                by_agent[key] = report.lockout_threshold
            else:  # This agent cannot tell (any more); another agent's word still stands.
                by_agent.pop(key, None)
        said: dict[str, list[int]] = {}
        for (domain, _), threshold in by_agent.items():
            said.setdefault(domain, []).append(threshold)
        self.directory[tenant] = {
            domain: lowest
            for domain, thresholds in said.items()
            if (lowest := lockout.lowest_threshold(thresholds)) is not None
        }

    def save(self, key: CounterKey, counter: lockout.Counter) -> None:
        """Keep a counter in memory and in the store (a clean one is forgotten in both)."""
        if counter.clean:
            if self.counters.pop(key, None) is not None:
                self._store.save_counter(key, counter)
            return
        self.counters[key] = counter
        self._store.save_counter(key, counter)
        if len(self.counters) > self._shed_above:
            self._shed()

    def _shed(self) -> None:
        """Forget the oldest counters of names no directory said exist: memory stays bounded.

        Only a flood of distinct names gets here (each wrong one costs a counter for a day;
        ``--rate-limit`` keeps it from getting here at all). Counters of an account a
        directory answered for (:data:`ACCOUNT_EXISTS`) are never shed, whatever they hold:
        a flood of made-up names must not hand a victim a fresh count. There are no more of
        them than the directories have accounts, which no caller can add to. The others are
        bounded: past ``max_counters`` in all, they are shed down to nine tenths of it,
        unlocked ones first (least recently failing first), then locked ones (soonest to run
        out first); when the known accounts alone fill the table, the next shed waits for a
        tenth more. Answers do not change: an unknown name is still counted, and locked, as
        a real one until shed.
        """
        drop = lockout.to_shed(
            self.counters,
            protected=self._known,
            now=self._clock(),
            keep=self._max_counters - self._max_counters // 10,
        )
        for key in drop:
            del self.counters[key]
            self._store.save_counter(key, lockout.CLEAN)
        self._shed_above = max(self._max_counters, len(self.counters) + self._max_counters // 10)
        log.warning("lockout.counters_shed", shed=len(drop), kept=len(self.counters))

    def _confirm(self, tenant: str, user: str, outcome: int | None) -> None:
        """Remember an account a directory answered for: its counters are never shed."""
        if outcome in ACCOUNT_EXISTS and (tenant, user) not in self._known:
            self._known.add((tenant, user))
            self._store.add_known_account(tenant, user, self._clock())

    def _directory_budget(self, tenant: str, domain: str, location: Location) -> int | None:
        """How many wrong passwords may be in the directory's count at once (None: unknown)."""
        threshold = self.directory.get(tenant, {}).get(domain)
        return lockout.directory_budget(threshold, unfamiliar=location == "unfamiliar")

    def fail(self, key: CounterKey, rule: lockout.LockoutRule) -> lockout.Counter:
        """Count a wrong password or code against ``key``; log when it locks; the new counter."""
        now = self._clock()
        before = self.counters.get(key, lockout.CLEAN)
        counter = lockout.fail(before, rule, now)
        if counter is before:
            return counter
        self.save(key, counter)
        if counter.lockouts > before.lockouts:
            log.warning(
                "lockout.locked",
                tenant=key[0],
                user=key[1],
                location=key[2],
                failures=counter.failures,
                seconds=round(counter.locked_until - now),
            )
        return counter
