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

from broker.policy.lockout import CLEAN, Counter
from broker.store.records import CounterKind, Flight, Location, Refused, UserLockout
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from psycopg.rows import TupleRow

    from broker.store.postgres.db import Database

#: The most decisions in one transaction (its locks are held until all are written).
MAX_BATCH = 64

_LOCK = (
    "SELECT pg_advisory_xact_lock(a, b) FROM (SELECT DISTINCT hashtext(t) AS a, hashtext(u) AS b"
    " FROM unnest(%s::text[], %s::text[]) AS k(t, u) ORDER BY a, b OFFSET 0) AS ordered"
)
_READ = (
    "WITH k AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS k(t, u))"
    " SELECT tenant, user_key, location, failures, lockouts, locked_until, last_failure, NULL"
    " FROM lockouts JOIN k ON tenant = k.t AND user_key = k.u UNION ALL"
    " SELECT tenant, user_key, location, NULL, NULL, NULL, expires_at, id"
    " FROM flights JOIN k ON tenant = k.t AND user_key = k.u"
)
_LOCK_ONE = "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))"
_READ_ONE = (
    "SELECT tenant, user_key, location, failures, lockouts, locked_until, last_failure, NULL"
    " FROM lockouts WHERE tenant = %s AND user_key = %s UNION ALL"
    " SELECT tenant, user_key, location, NULL, NULL, NULL, expires_at, id"
    " FROM flights WHERE tenant = %s AND user_key = %s"
)
_REPEATS = (
    "SELECT tenant, user_key, digest, known, expires_at FROM repeats"
    " JOIN unnest(%s::text[], %s::text[]) AS k(t, u) ON tenant = k.t AND user_key = k.u"
)
_REPEATS_ONE = (
    "SELECT tenant, user_key, digest, known, expires_at FROM repeats"
    " WHERE tenant = %s AND user_key = %s"
)
_DELETE_COUNTERS = (
    "DELETE FROM lockouts WHERE (tenant, user_key, location) IN"
    " (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
)
_SAVE_COUNTERS = (
    "INSERT INTO lockouts (tenant, user_key, location, failures, lockouts, locked_until,"
    " last_failure) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[],"
    " %s::int[], %s::float8[], %s::float8[])"
    " ON CONFLICT (tenant, user_key, location) DO UPDATE SET failures = excluded.failures,"
    " lockouts = excluded.lockouts, locked_until = excluded.locked_until,"
    " last_failure = excluded.last_failure"
)
_DELETE_REPEATS = (
    "DELETE FROM repeats WHERE (tenant, user_key, digest) IN"
    " (SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[]))"
)
_SAVE_REPEATS = (
    "INSERT INTO repeats (tenant, user_key, digest, known, expires_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bool[], %s::float8[])"
    " ON CONFLICT (tenant, user_key, digest) DO UPDATE SET known = excluded.known,"
    " expires_at = excluded.expires_at"
)
_DELETE_FLIGHT = "DELETE FROM flights WHERE id = %s"
_ADD_FLIGHT = (
    "INSERT INTO flights (id, tenant, user_key, location, expires_at) VALUES (%s, %s, %s, %s, %s)"
)
_DELETE_FLIGHTS = "DELETE FROM flights WHERE id = ANY(%s::text[])"
_ADD_FLIGHTS = (
    "INSERT INTO flights (id, tenant, user_key, location, expires_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[])"
)

Key = tuple[str, str]
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


@dataclass(slots=True)
class _Found:
    """One user's rows as read: what the writes are compared with."""

    counters: dict[CounterKind, Counter] = field(default_factory=dict)
    flights: dict[str, Flight] = field(default_factory=dict)
    repeats: dict[bytes, Refused] = field(default_factory=dict)


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
        tenants, users = [k[0] for k in keys], [k[1] for k in keys]
        outcomes: list[tuple[_Item, Any, BaseException | None]] = []
        with self._db.connection() as conn, conn.pipeline(), conn.transaction():
            if len(keys) == 1:  # The common case at low load: plain parameters are cheaper.
                conn.execute(_LOCK_ONE, keys[0])
                rows = conn.execute(_READ_ONE, keys[0] * 2)
                refused = conn.execute(_REPEATS_ONE, keys[0])
            else:
                conn.execute(_LOCK, (tenants, users))
                rows = conn.execute(_READ, (tenants, users))
                refused = conn.execute(_REPEATS, (tenants, users))
            found = _read(keys, rows.fetchall(), refused.fetchall())
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
            _write(conn, found, states)
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


def _read(
    keys: Sequence[Key], rows: Sequence[TupleRow], refused: Sequence[TupleRow]
) -> dict[Key, _Found]:
    """The rows of the three tables, by user (a user with none has an empty entry)."""
    found = {key: _Found() for key in keys}
    for tenant, user, location, failures, lockouts, until, last, flight_id in rows:
        entry = found[(tenant, user)]
        if flight_id is None:
            kind = cast("CounterKind", location)
            entry.counters[kind] = Counter(failures, lockouts, until, last)
        else:
            entry.flights[flight_id] = Flight(cast("Location", location), last)
    for tenant, user, digest, known, expires_at in refused:
        found[(tenant, user)].repeats[bytes(digest)] = Refused(bool(known), expires_at)
    return found


def _write(
    conn: psycopg.Connection[TupleRow], found: dict[Key, _Found], states: dict[Key, UserLockout]
) -> None:
    """What the works changed, as at most six statements whatever the batch's size."""
    gone: list[tuple[str, str, str]] = []
    saved: list[tuple[str, str, str, int, int, float, float]] = []
    landed: list[str] = []
    added: list[tuple[str, str, str, str, float]] = []
    forgotten: list[tuple[str, str, bytes]] = []
    refused: list[tuple[str, str, bytes, bool, float]] = []
    for (tenant, user), state in states.items():
        before = found[(tenant, user)]
        forgotten.extend((tenant, user, d) for d in before.repeats.keys() - state.repeats.keys())
        refused.extend(
            (tenant, user, digest, entry.known, entry.expires_at)
            for digest, entry in state.repeats.items()
            if before.repeats.get(digest) != entry
        )
        for kind in before.counters.keys() | state.counters.keys():
            after = state.counters.get(kind, CLEAN)
            if after == before.counters.get(kind, CLEAN):
                continue
            if after.clean:
                gone.append((tenant, user, kind))
            else:
                saved.append(
                    (
                        tenant,
                        user,
                        kind,
                        after.failures,
                        after.lockouts,
                        after.locked_until,
                        after.last_failure,
                    )
                )
        landed.extend(before.flights.keys() - state.flights.keys())
        added.extend(
            (flight_id, tenant, user, flight.location, flight.expires_at)
            for flight_id, flight in state.flights.items()
            if flight_id not in before.flights
        )
    if gone:
        conn.execute(_DELETE_COUNTERS, _columns(gone, 3))
    if saved:
        conn.execute(_SAVE_COUNTERS, _columns(saved, 7))
    _write_flights(conn, landed, added)
    if forgotten:
        conn.execute(_DELETE_REPEATS, _columns(forgotten, 3))
    if refused:
        conn.execute(_SAVE_REPEATS, _columns(refused, 5))


def _write_flights(
    conn: psycopg.Connection[TupleRow],
    landed: list[str],
    added: list[tuple[str, str, str, str, float]],
) -> None:
    """Flights landed and added; one (each decision's usual change) as plain parameters."""
    if len(landed) == 1:
        conn.execute(_DELETE_FLIGHT, landed)
    elif landed:
        conn.execute(_DELETE_FLIGHTS, (landed,))
    if len(added) == 1:
        conn.execute(_ADD_FLIGHT, added[0])
    elif added:
        conn.execute(_ADD_FLIGHTS, _columns(added, 5))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the arrays ``unnest`` turns back into rows."""
    return [[row[i] for row in rows] for i in range(width)]
