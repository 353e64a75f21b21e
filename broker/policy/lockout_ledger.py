"""Where the lockout gate's per-user state lives: this process's memory, or the shared store.

The gate (:mod:`broker.policy.lockout_gate`) decides under one user's lock, through
:meth:`Ledger.run`: a decision reads that user's counters and checks in flight and changes
them, with nothing else touching them meanwhile. The decision itself is the same code
whichever ledger holds the state:

- :class:`MemoryLedger`, for one broker on its own store (SQLite, the embedded default):
  the counters live in memory for the hot path and are written through to the store, checks
  in flight are only counted here (they die with the process that holds them), and memory is
  bounded by shedding counters of names no directory said exist. A user with no failure
  costs no store round trip at all.
- :class:`SharedLedger`, for several brokers on one store (PostgreSQL): every decision is a
  transaction of the store under that user's lock (:meth:`PolicyStore.with_user`), so
  guesses spread over N brokers are let through and counted exactly as at one, and a check
  whose broker died counts once its flight expires (see :mod:`broker.policy.lockout_gate`).
  Nothing is cached: the store is the truth, and an administrator's unlock applies to the
  next decision at every broker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import time
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog

from broker.policy import lockout
from broker.store.records import UserLockout

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.store.policy_store import PolicyStore
    from broker.store.records import CounterKey, CounterKind, Flight

log = structlog.get_logger()
_T = TypeVar("_T")
KINDS: tuple[CounterKind, ...] = ("familiar", "unfamiliar", "directory")
#: How often a check waiting for its turn looks at a shared ledger again: another broker's
#: check ending wakes no waiter here.
SHARED_POLL = 0.05
#: Threads for the shared store's writes nothing waits for (:meth:`SharedLedger.aside`: an
#: account a directory answered for, the first time); decisions and landings are queued to
#: the store's batches from the event loop and need none.
SHARED_THREADS = 2


class Ledger(Protocol):
    """One user's lockout state, read and changed under that user's lock."""

    #: How often waiters re-decide without being woken (None: every change wakes them).
    poll: float | None

    def run(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """Run ``work`` on the user's state; what it changes is kept (all of it, or none)."""

    async def decide(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """:meth:`run`, awaited: waiting on the store stalls no one, and costs no thread."""

    def later(
        self,
        tenant: str,
        user: str,
        work: Callable[[UserLockout], _T],
        then: Callable[[concurrent.futures.Future[_T]], None],
    ) -> asyncio.Future[None] | None:
        """:meth:`run` without holding up the caller, then ``then`` with its outcome.

        ``then`` runs on the event loop (what it raises, the returned future holds). The
        future of both, or None once done. For an answer's accounting: the agent's stream
        goes on while it is written.
        """

    def aside(self, call: Callable[[], None]) -> None:
        """Run ``call``, a store write nothing waits for, where it stalls no one."""

    def reload(self) -> set[tuple[str, str]]:
        """Re-read what another process changed; the (tenant, user) whose counters it cleared."""

    def upkeep(self, keep: Callable[[CounterKey, lockout.Counter], bool]) -> None:
        """Forget in memory the counters ``keep`` says no rule needs any more."""


def _settled(call: Callable[[], _T]) -> concurrent.futures.Future[_T]:
    """``call``'s outcome, run now, as a done future."""
    future: concurrent.futures.Future[_T] = concurrent.futures.Future()
    try:
        future.set_result(call())
    except Exception as error:  # noqa: BLE001 - the caller's, handed to it
        future.set_exception(error)
    return future


class MemoryLedger:
    """Counters in memory, written through to the store; flights counted in memory only."""

    poll: float | None = None

    def __init__(
        self,
        store: PolicyStore,
        *,
        known: Callable[[], set[tuple[str, str]]],
        clock: Callable[[], float] = time.time,
        max_counters: int,
    ) -> None:
        """Load the counters; ``known``: the accounts whose counters are never shed.

        ``max_counters`` bounds the counters of names no directory has said exist
        (:meth:`_shed`).
        """
        self._store = store
        self._known = known
        self._clock = clock
        self._max_counters = max_counters
        self._shed_above = self._max_counters
        self.counters: dict[CounterKey, lockout.Counter] = store.counters()
        self._flights: dict[tuple[str, str], dict[str, Flight]] = {}

    def run(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """Run ``work`` on a copy of the user's state, then keep what changed."""
        before: dict[CounterKind, lockout.Counter] = {}
        for kind in KINDS:
            if (counter := self.counters.get((tenant, user, kind))) is not None:
                before[kind] = counter
        flights = self._flights.get((tenant, user))
        state = UserLockout(dict(before), dict(flights) if flights else {})
        result = work(state)
        if state.flights:
            self._flights[(tenant, user)] = state.flights
        elif flights is not None:
            del self._flights[(tenant, user)]
        for kind in before.keys() | state.counters.keys():
            after = state.counters.get(kind, lockout.CLEAN)
            if after != before.get(kind, lockout.CLEAN):
                self._save((tenant, user, kind), after)
        return result

    async def decide(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """:meth:`run` here and now: memory has no wait worth a thread."""
        return self.run(tenant, user, work)

    def later(
        self,
        tenant: str,
        user: str,
        work: Callable[[UserLockout], _T],
        then: Callable[[concurrent.futures.Future[_T]], None],
    ) -> None:
        """Run both here and now."""
        then(_settled(functools.partial(self.run, tenant, user, work)))

    def aside(self, call: Callable[[], None]) -> None:
        """Here and now (the store is this process's)."""
        call()

    def reload(self) -> set[tuple[str, str]]:
        """Re-read the counters (the CLI may have cleared some); whose were cleared."""
        before = set(self.counters)
        self.counters = self._store.counters()
        return {(tenant, user) for tenant, user, _ in before - set(self.counters)}

    def upkeep(self, keep: Callable[[CounterKey, lockout.Counter], bool]) -> None:
        """Drop counters no rule needs any more; the shedding threshold follows what is left."""
        self.counters = {key: c for key, c in self.counters.items() if keep(key, c)}
        self._shed_above = max(self._max_counters, len(self.counters) + self._max_counters // 10)

    def _save(self, key: CounterKey, counter: lockout.Counter) -> None:
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
        directory answered for are never shed, whatever they hold: a flood of made-up names
        must not hand a victim a fresh count. There are no more of them than the directories
        have accounts, which no caller can add to. The others are bounded: past
        ``max_counters`` in all, they are shed down to nine tenths of it, unlocked ones first
        (least recently failing first), then locked ones (soonest to run out first); when the
        known accounts alone fill the table, the next shed waits for a tenth more. Answers do
        not change: an unknown name is still counted, and locked, as a real one until shed.
        """
        drop = lockout.to_shed(
            self.counters,
            protected=self._known(),
            now=self._clock(),
            keep=self._max_counters - self._max_counters // 10,
        )
        for key in drop:
            del self.counters[key]
            self._store.save_counter(key, lockout.CLEAN)
        self._shed_above = max(self._max_counters, len(self.counters) + self._max_counters // 10)
        log.warning("lockout.counters_shed", shed=len(drop), kept=len(self.counters))


class SharedLedger:
    """Every decision a transaction of the shared store, under the user's lock."""

    poll: float | None = SHARED_POLL

    def __init__(self, store: PolicyStore, *, threads: int = 0) -> None:
        """Decide through ``store`` (one every broker of the cluster uses).

        ``threads``: how many threads write aside (:meth:`aside`); 0 runs every
        decision on the caller's thread, for a store one thread at a time may use (SQLite).
        """
        self._store = store
        self._threads = (
            concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="pta-ledger")
            if threads
            else None
        )

    def run(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """See :meth:`PolicyStore.with_user`."""
        return self._store.with_user(tenant, user, work)

    async def decide(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """:meth:`run`, queued from the event loop straight to the store's next transaction.

        A decision waits for two round trips to the store, longer under another broker's
        hold of the user's lock: on the event loop that wait stalled every sign-in (45 % of
        the loop's time at 64 in flight). No thread of the ledger's waits for it either (one
        did per decision: a hand-over and two wake-ups more); the store's batches run it, and
        its answer wakes the loop. On the caller's thread for a store one thread at a time
        may use (SQLite).
        """
        if self._threads is None:
            return self.run(tenant, user, work)
        # (The store runs it in the caller's context, as it runs every queued decision.)
        return await asyncio.wrap_future(self._store.submit_with_user(tenant, user, work))

    def later(
        self,
        tenant: str,
        user: str,
        work: Callable[[UserLockout], _T],
        then: Callable[[concurrent.futures.Future[_T]], None],
    ) -> asyncio.Future[None] | None:
        """Queued to the store's batches as :meth:`decide` is; ``then`` on the event loop."""
        if self._threads is None:
            then(self._store.submit_with_user(tenant, user, work))
            return None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finish(outcome: concurrent.futures.Future[_T]) -> None:
            try:
                then(outcome)
            except Exception as error:  # noqa: BLE001 - the awaiting caller's to see
                done.set_exception(error)
            else:
                done.set_result(None)

        self._store.submit_with_user(tenant, user, work).add_done_callback(
            lambda outcome: loop.call_soon_threadsafe(finish, outcome)
        )
        return done

    def aside(self, call: Callable[[], None]) -> None:
        """In one of the ledger's threads (with the caller's context), not waited for."""
        if self._threads is None:
            call()
            return
        self._threads.submit(contextvars.copy_context().run, call)

    def reload(self) -> set[tuple[str, str]]:
        """Nothing is held here: every decision reads the store."""
        return set()

    def upkeep(self, keep: Callable[[CounterKey, lockout.Counter], bool]) -> None:
        """Nothing is held here (the store forgets stale counters itself)."""
