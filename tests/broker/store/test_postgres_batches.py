"""``broker/store/postgres/user_batches.py``: decisions queued together share a transaction.

What every store promises of ``with_user`` (exact admission, no lost count, all or nothing)
is in ``test_contract.py``, with one handle per racer; here is what only the batching adds:
many threads on one handle, one transaction for what was queued together, a work that raises
or a row that cannot be written costing only its own caller, and two handles' batches over
the same users, locked in opposite orders, never waiting for each other in a cycle.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import TYPE_CHECKING

import psycopg
import pytest

from broker.policy.lockout import CLEAN, Counter
from broker.policy.lockout_ledger import SharedLedger
from broker.store import open_store
from broker.store.postgres.store import PostgresStore
from broker.store.records import Flight, UserLockout
from tooling.postgres import postgres_missing_reason

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Iterator

    from broker.store.protocols import Store
    from tooling.postgres import Postgres

REASON = postgres_missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
_DATABASES = itertools.count()
THREADS = 24
ROUNDS = 10


@pytest.fixture
def opener(postgres: Postgres) -> Iterator[Callable[[], PostgresStore]]:
    """Handles on one fresh database, whose tenant ``acme`` exists; closed afterwards."""
    url = postgres.new_database(f"batches_{next(_DATABASES)}")
    opened: list[Store] = []

    def open_one() -> PostgresStore:
        store = open_store(url=url)
        opened.append(store)
        assert isinstance(store, PostgresStore)
        return store

    open_one().add_tenant("acme", [])
    yield open_one
    for store in opened:
        store.close()


def _count(store: PostgresStore, user: str) -> None:
    def work(state: UserLockout) -> None:
        before = state.counters.get("directory", CLEAN)
        state.counters["directory"] = Counter(failures=before.failures + 1, last_failure=1e9)

    store.policy.with_user("acme", user, work)


def _fail_once(state: UserLockout) -> None:
    state.counters["directory"] = Counter(1, last_failure=1e9)


def _in_threads(work: Callable[[int], None], threads: int = THREADS) -> None:
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        start.wait()
        try:
            work(index)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    running = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in running)
    assert errors == []


class TestOneHandle:
    """Threads of one broker: their decisions share transactions and none is lost."""

    def test_counts_of_many_users_from_many_threads(
        self, opener: Callable[[], PostgresStore]
    ) -> None:
        """24 threads, 10 counts each, over 4 users (some in one batch twice): all 240 kept."""
        store = opener()

        def counts(n: int) -> None:
            for r in range(ROUNDS):
                _count(store, f"u{(n + r) % 4}")

        _in_threads(counts)
        counters = opener().policy.counters()
        assert sum(c.failures for c in counters.values()) == THREADS * ROUNDS
        assert {key[1] for key in counters} == {"u0", "u1", "u2", "u3"}
        assert store.policy.batches.transactions < THREADS * ROUNDS  # Some were decided together.

    def test_submitted_and_waited_decisions_mixed(
        self, opener: Callable[[], PostgresStore]
    ) -> None:
        """Decisions submitted (as an event loop does) beside threads that wait: none lost.

        Either kind may lead: a waiting thread leads when nobody does, and hands what is left
        of submitted ones to the batches' own thread, which decides waiting callers' too.
        """
        store = opener()
        submitted: list[concurrent.futures.Future[None]] = []
        lock = threading.Lock()

        def bump(state: UserLockout) -> None:
            before = state.counters.get("directory", CLEAN)
            state.counters["directory"] = Counter(failures=before.failures + 1, last_failure=1e9)

        def mixed(n: int) -> None:
            for r in range(ROUNDS):
                user = f"u{(n + r) % 4}"
                if (n + r) % 2:
                    future = store.policy.submit_with_user("acme", user, bump)
                    with lock:
                        submitted.append(future)
                else:
                    store.policy.with_user("acme", user, bump)

        _in_threads(mixed)
        for future in submitted:
            assert future.result(timeout=30) is None
        counters = opener().policy.counters()
        assert sum(c.failures for c in counters.values()) == THREADS * ROUNDS
        assert len(submitted) == THREADS * ROUNDS // 2

    async def test_a_caller_that_gives_up_breaks_nothing(
        self, opener: Callable[[], PostgresStore]
    ) -> None:
        """A sign-in cancelled while its decision waits: that work never runs, the rest do.

        Its cancellation reached the store's future, which the batch then failed to answer
        (InvalidStateError): the other callers of the batch got that error for committed
        work, what was queued behind waited for the next arrival, and a waiting thread spun.
        """
        store = opener()
        ledger = SharedLedger(store.policy, threads=2)
        started, release = threading.Event(), threading.Event()
        ran: list[str] = []

        def hold(state: UserLockout) -> None:
            started.set()
            release.wait(10)
            state.counters["directory"] = Counter(1, last_failure=1e9)

        def mark(name: str) -> Callable[[UserLockout], str]:
            def work(state: UserLockout) -> str:
                ran.append(name)
                state.flights[name] = Flight("familiar", 1e10)
                return name

            return work

        holder = asyncio.ensure_future(ledger.decide("acme", "h", hold))
        await asyncio.to_thread(started.wait, 10)
        given_up = asyncio.ensure_future(ledger.decide("acme", "a", mark("gone")))
        kept = asyncio.ensure_future(ledger.decide("acme", "b", mark("kept")))
        waited = asyncio.ensure_future(
            asyncio.to_thread(store.policy.with_user, "acme", "c", mark("waited"))
        )
        await asyncio.sleep(0.05)  # All three queued behind the held transaction.
        given_up.cancel()
        release.set()
        assert await asyncio.wait_for(kept, 10) == "kept"
        assert await asyncio.wait_for(waited, 10) == "waited"
        await asyncio.wait_for(holder, 10)
        assert given_up.cancelled()
        assert sorted(ran) == ["kept", "waited"]  # The cancelled work never ran.
        flights = opener().policy.with_user("acme", "a", lambda state: dict(state.flights))
        assert flights == {}
        assert await asyncio.wait_for(ledger.decide("acme", "a", mark("after")), 10) == "after"

    def test_a_submitted_work_that_raises_fails_its_future_only(
        self, opener: Callable[[], PostgresStore]
    ) -> None:
        """Its exception in its future; the store goes on deciding."""
        store = opener()

        def broken(state: UserLockout) -> None:
            state.counters["directory"] = Counter(9, last_failure=1e9)
            raise ValueError("the decision failed")

        failed = store.policy.submit_with_user("acme", "a", broken)
        with pytest.raises(ValueError, match="the decision failed"):
            failed.result(timeout=30)
        store.policy.submit_with_user("acme", "a", _fail_once).result(timeout=30)
        assert opener().policy.counters()[("acme", "a", "directory")].failures == 1

    def test_what_is_queued_meanwhile_goes_in_one_transaction(
        self, opener: Callable[[], PostgresStore]
    ) -> None:
        """While one decision runs, 20 more queue up: they take one transaction, not 20."""
        store = opener()
        started, queued = threading.Event(), threading.Event()

        def first(state: UserLockout) -> None:
            started.set()
            queued.wait(10)
            state.flights["first"] = Flight("familiar", 1e10)

        holder = threading.Thread(target=store.policy.with_user, args=("acme", "a", first))
        holder.start()
        assert started.wait(10)
        others = [threading.Thread(target=_count, args=(store, f"b{n}")) for n in range(20)]
        for thread in others:
            thread.start()
        deadline = time.monotonic() + 10
        while store.policy.batches.queued < 20 and time.monotonic() < deadline:
            time.sleep(0.001)
        queued.set()
        for thread in [holder, *others]:
            thread.join(10)
        assert store.policy.batches.transactions == 2
        counters = opener().policy.counters()
        assert sorted(key[1] for key in counters) == sorted(f"b{n}" for n in range(20))

    def test_a_work_that_raises_costs_only_its_caller(
        self, opener: Callable[[], PostgresStore]
    ) -> None:
        """Its exception reaches its caller, its user is as before; the others are written."""
        store = opener()
        _count(store, "victim")
        raised: list[BaseException] = []

        def broken(state: UserLockout) -> None:
            state.counters.clear()
            state.flights["never"] = Flight("familiar", 1e10)
            raise RuntimeError("the work's own")

        def one(n: int) -> None:
            if n == 0:
                try:
                    store.policy.with_user("acme", "victim", broken)
                except RuntimeError as error:
                    raised.append(error)
            else:
                _count(store, "victim" if n % 2 else f"other{n}")

        _in_threads(one, 12)
        assert [str(e) for e in raised] == ["the work's own"]
        after = opener().policy.with_user(
            "acme", "victim", lambda s: (dict(s.counters), dict(s.flights))
        )
        assert after[0]["directory"].failures == 1 + 6  # Its own first, and six others.
        assert after[1] == {}

    def test_a_row_that_cannot_be_written_costs_only_its_caller(
        self, opener: Callable[[], PostgresStore]
    ) -> None:
        """A tenant that is gone (a foreign key): that caller fails, the batch's others not."""
        store = opener()
        failed: list[BaseException] = []

        def one(n: int) -> None:
            if n == 0:
                try:
                    store.policy.with_user("gone", "u", _fail_once)
                except psycopg.Error as error:
                    failed.append(error)
            else:
                _count(store, f"u{n}")

        _in_threads(one, 12)
        assert [type(e) for e in failed] == [psycopg.errors.ForeignKeyViolation]
        assert len(opener().policy.counters()) == 11


class TestTwoHandles:
    """Two brokers' batches lock the same users in opposite orders: no cycle, no lost count."""

    def test_opposite_orders(self, opener: Callable[[], PostgresStore]) -> None:
        """Each of two handles' 12 threads counts users 0..7 in its own order: all kept."""
        one, two = opener(), opener()
        users = [f"u{n}" for n in range(8)]

        def work(n: int) -> None:
            store, order = (one, users) if n % 2 else (two, users[::-1])
            for _ in range(3):
                for user in order:
                    _count(store, user)

        _in_threads(work)
        counters = opener().policy.counters()
        assert {key[1]: c.failures for key, c in counters.items()} == dict.fromkeys(
            users, THREADS * 3
        )
