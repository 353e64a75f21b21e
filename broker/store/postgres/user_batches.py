"""Many users' lockout decisions in one transaction: group commit for the shared ledger.

Why: a decision under a user's lock was five statements (BEGIN, the lock, the read, a write,
COMMIT), and each statement costs the broker about a tenth of a millisecond of CPU in the
driver, far more than it costs the server; at 64 sign-ins in flight the broker spent most of
its time there (PostgreSQL with lockout did 0.19x the SQLite broker's sign-ins). Decisions
of different users that wait for the store at the same moment are independent, so one
transaction can hold all their locks and decide them all with the same five statements.

How: callers (the ledger's threads, or any thread) queue ``(tenant, user, work)``; the one
that finds nobody deciding takes everything queued (at most :data:`MAX_BATCH`) and runs it
as one transaction in two round trips (pipeline mode), while the others wait:

1. BEGIN; the advisory lock of every distinct user (:func:`~broker.store.postgres.db.lock_pair`'s
   key) in one statement, taken in the order of the keys, as every broker takes them, so two
   batches never wait for each other in a cycle; one read of all their counters and flights
   and one of their refused passwords' digests (the repeat memory,
   :mod:`broker.policy.shared_repeats`), statements after the locks, so their snapshots see
   what the previous holders committed.
2. Each work in the order queued, in its caller's context (a user's works see each other's
   changes, as under one lock in turn); then what changed, as at most six statements of
   arrays (``unnest``), and COMMIT.

A work that raises gets its exception and leaves its user's state as it found it; the others
go on. A transaction that fails because the server is not there fails every caller of the
batch (:class:`~pta.errors.StoreUnavailable`, as for any call); one that fails for any other
reason (a tenant deleted meanwhile: a foreign key) is run again one caller at a time, so one
caller's bad row never fails another's sign-in.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import psycopg

from broker.store.postgres.user_rows import read_users, write_users
from broker.store.records import UserLockout
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.store.postgres.db import Database

#: The most decisions in one transaction (its locks are held until all are written).
MAX_BATCH = 64

_T = TypeVar("_T")


@dataclass(slots=True)
class _Item:
    """One queued decision and where its caller waits for the outcome."""

    tenant: str
    user: str
    work: Callable[[UserLockout], Any]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    #: Set when decided, or when this caller is to run the next transaction (``lead``).
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    #: A thread waits in :meth:`UserBatches.run` for it (not so for one submitted).
    waited: bool = True


class UserBatches:
    """The queue of decisions, and whose thread runs the next transaction.

    A caller of :meth:`run` that finds nobody deciding runs the transaction itself, with
    whatever else is queued by then. Once its own decision is done, a leader that finds more
    queued hands the next transaction to the first caller waiting, so no caller decides for
    others longer than one transaction after its own. A decision :meth:`submit`-ted (from an
    event loop, which must not wait) is decided by a thread of the batches' own, which runs
    transactions while any are queued, the waiting callers' with them: a loop's decisions cost
    it no thread of its own each, and at load no wake-up but the answer's.
    """

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        """Decide through ``db``."""
        self._db = db
        self._max_batch = max_batch
        self._queue: list[_Item] = []
        self._lock = threading.Lock()
        self._leading = False
        self._closed = False
        self._in_work = threading.local()
        #: Where submitted decisions are run when nobody leads (one thread, made when needed).
        self._runner: concurrent.futures.ThreadPoolExecutor | None = None
        #: Transactions run so far (each decides one batch).
        self.transactions = 0

    @property
    def queued(self) -> int:
        """Decisions waiting for the next transaction."""
        with self._lock:
            return len(self._queue)

    def run(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """Run ``work`` on the user's state under the user's lock; what it changes is kept.

        Raises:
            StoreUnavailable: When the server cannot be reached.
            RuntimeError: When closed, or when called from a work (it would wait for itself).
        """
        if getattr(self._in_work, "active", False):
            raise RuntimeError("a lockout decision cannot wait for another one")
        item = _Item(tenant, user, work)
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.append(item)
            item.lead = not self._leading
            self._leading = True
        while not item.future.done():
            if item.lead:
                self._lead(item)
            else:
                item.wake.wait()
                with self._lock:  # Set only by its decided batch or the lead: never spin.
                    if not item.future.done() and not item.lead:
                        item.wake.clear()
        return cast("_T", item.future.result())

    def submit(
        self, tenant: str, user: str, work: Callable[[UserLockout], _T]
    ) -> concurrent.futures.Future[_T]:
        """Queue ``work`` as :meth:`run` does, without waiting: its future.

        Raises:
            RuntimeError: When closed.
        """
        item = _Item(tenant, user, work, waited=False)
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.append(item)
            start = not self._leading
            self._leading = True
        if start:
            self._start_runner()
        return cast("concurrent.futures.Future[_T]", item.future)

    def close(self) -> None:
        """Refuse new decisions (those queued are still decided)."""
        with self._lock:
            self._closed = True
            runner = self._runner
        if runner is not None:
            runner.shutdown(wait=False)

    def _start_runner(self) -> None:
        """Have the batches' own thread lead (the caller holds the lead, and hands it over)."""
        with self._lock:
            if self._runner is None:
                self._runner = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="pta-batches"
                )
            runner = self._runner
        try:
            runner.submit(self._drain)
        except RuntimeError:  # Closed meanwhile: nothing more is decided (not on this thread,
            with self._lock:  # which may be an event loop's).
                dropped, self._queue = self._queue, []
                self._leading = False
            for item in dropped:
                _resolve(item, error=RuntimeError("the store is closed"))
                item.wake.set()

    def _drain(self) -> None:
        """Run transactions while any are queued (callers of :meth:`run` too); then stop."""
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._leading = False
                        return
                    batch = self._take()
                self._run_batch(batch)
        except BaseException:  # (Not an Exception: those reach the callers.) Never stay stuck
            with self._lock:  # leading: the next caller leads.
                self._leading = False
            raise

    def _take(self) -> list[_Item]:
        """The next batch off the queue (the lock held), without those cancelled meanwhile.

        A submitted decision whose caller stopped waiting before it was taken is dropped, its
        work never run (no flight added for nobody); one taken can no longer be cancelled,
        so its caller's giving up never breaks the batch's answers.
        """
        taken = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        # (Only submitted ones can be cancelled: a caller of run() holds its future alone.)
        return [item for item in taken if item.future.set_running_or_notify_cancel()]

    def _run_batch(self, batch: list[_Item]) -> None:
        if not batch:
            return
        self._in_work.active = True
        try:
            self._decide(batch)
        finally:
            self._in_work.active = False
            for item in batch:
                item.wake.set()

    def _lead(self, own: _Item) -> None:
        """Run transactions until ``own`` is decided; then hand over, or stop leading."""
        try:
            while not own.future.done():
                with self._lock:
                    batch = self._take()
                self._run_batch(batch)
        finally:
            with self._lock:
                heir = self._queue[0] if self._queue else None
                if heir is None:
                    self._leading = False
                elif heir.waited:
                    heir.lead = True
                    heir.wake.set()
            if heir is not None and not heir.waited:
                self._start_runner()

    def _decide(self, batch: list[_Item]) -> None:
        """Run a batch in one transaction; after a failure not the server's, one at a time."""
        try:
            self._transaction(batch)
        except StoreUnavailable as error:
            for item in batch:
                _resolve(item, error=error)
        except psycopg.Error as error:
            if len(batch) == 1:
                _resolve(batch[0], error=error)
                return
            for item in batch:
                self._decide([item])
        except BaseException as error:  # Never leave a caller waiting forever.
            for item in batch:
                _resolve(item, error=error)
            raise

    def _transaction(self, batch: list[_Item]) -> None:
        self.transactions += 1
        keys = list(dict.fromkeys((item.tenant, item.user) for item in batch))
        outcomes: list[tuple[_Item, Any, BaseException | None]] = []
        with self._db.connection() as conn, conn.pipeline(), conn.transaction():
            found = read_users(conn, keys)
            states = {
                key: UserLockout(
                    dict(found[key].counters), dict(found[key].flights), dict(found[key].repeats)
                )
                for key in keys
            }
            for item in batch:
                state = states[(item.tenant, item.user)]
                before = state.copy()
                try:
                    outcomes.append((item, item.context.run(item.work, state), None))
                except Exception as error:  # noqa: BLE001 - the caller's, handed to it
                    states[(item.tenant, item.user)] = before
                    outcomes.append((item, None, error))
            write_users(conn, found, states)
        for item, result, raised in outcomes:
            _resolve(item, result, raised)


def _resolve(item: _Item, result: object = None, error: BaseException | None = None) -> None:
    """Answer an item's caller, once (a later answer for the same item is dropped)."""
    if item.future.done():
        return
    if error is None:
        item.future.set_result(result)
    else:
        item.future.set_exception(error)
