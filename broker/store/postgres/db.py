"""How the PostgreSQL store reaches its server: one pool, short calls, failures said at once.

Why synchronous psycopg 3 with :class:`psycopg_pool.ConnectionPool` (and not asyncpg, nor
psycopg's async API): the store's protocols are synchronous, because the embedded SQLite store,
the CLI and the policy call them as plain functions; the broker calls them from its event loop
(or from threads: how it does is the caller's choice, not the store's). One synchronous
implementation serves all of them, with no event loop of its own to bridge. Calls are short
(one statement, or one small transaction: a tenth of a millisecond or so on loopback), so an
async twin of every protocol would buy little. The pool keeps connections open between calls,
lends one per concurrent caller for one statement or transaction, and reconnects in the
background after an outage.

Connections are in autocommit: a single statement is atomic on its own, so only the writes of
several statements pay for BEGIN and COMMIT (:meth:`Database.transaction`). psycopg prepares a
statement on the server after its fifth execution on a connection, so the calls of the sign-in
path are parsed and planned once per connection.

Failing fast: libpq's ``connect_timeout`` (2 s, its smallest), the pool's wait for a
connection (:data:`POOL_TIMEOUT`), a server-side ``statement_timeout``, and a client-side cut
(:data:`CALL_TIMEOUT`, :mod:`~broker.store.postgres.watchdog`) for a server that is frozen
rather than gone (it accepts TCP and never answers), bound every call. psycopg's
``OperationalError`` (server gone or refusing, shut down, timed out, cut) and the pool's
``PoolTimeout`` become :class:`pta.errors.StoreUnavailable`, which the RPC layer answers
UNAVAILABLE. After one such failure the store is *down*: every call fails at once, without
touching the pool, while a thread of its own probes the server every
:data:`PROBE_INTERVAL`; the first answer lets calls in again. So an outage costs the broker's
event loop at most one bounded wait, not one per call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from broker.store.location import check_url, redact
from broker.store.postgres.watchdog import Watchdog
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from psycopg.rows import TupleRow

# The pool says each failed reconnection at WARNING through the standard library, which nothing
# configures (so it would reach stderr raw, four times a second): the broker's own log says
# "store unavailable" once, with the reason.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

#: libpq's smallest connect timeout (it reads 1 as 2).
CONNECT_TIMEOUT = 2
#: How long a call waits for a pooled connection (all busy, or none can be made) before it
#: fails: a sign-in must hear "unavailable" long before its deadline.
POOL_TIMEOUT = 1.0
#: No statement of this store takes long; one that does waits on a lock held by a stuck
#: session, and fails rather than hangs.
STATEMENT_TIMEOUT_MS = 5_000
#: Connections kept open, and the most lent at once.
POOL_MIN = 1
POOL_MAX = 8
#: After an outage, the pool's background attempts back off from 1 s; past this many seconds
#: it gives up, and the next call starts afresh (so recovery is never a long backoff away).
RECONNECT_TIMEOUT = 10.0
#: The longest one call waits on the server before its connection is cut
#: (:mod:`~broker.store.postgres.watchdog`): a frozen server must not hold the broker.
CALL_TIMEOUT = 1.0
#: While the server is down, how often a thread of its own tries it (calls fail at once).
PROBE_INTERVAL = 0.2
#: One watchdog for every pool of the process.
WATCHDOG = Watchdog()
#: What a caller (a client of the broker) reads: where the store is is none of its business.
UNAVAILABLE = "the broker's store does not answer: try again shortly"

Row = tuple[Any, ...]


def lock_pair(conn: psycopg.Connection[Any], first: str, second: str) -> None:
    """Hold, until the transaction ends, the advisory lock of one (tenant, name) pair.

    For a read-modify-write of rows no single row stands for (a user's counters, what an
    agent reported): two brokers doing it at once would both find nothing to update, then
    both insert, and one would fail on the primary key. Two pairs whose hashes collide only
    wait for each other.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (first, second))


def conninfo(url: str) -> str:
    """The libpq connection string for ``url``, with this store's timeouts unless it sets them.

    Raises:
        ValueError: When ``url`` is not a PostgreSQL URL libpq can read (said without it).
    """
    check_url(url)
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ValueError(f"cannot read the store URL {redact(url)}") from None
    given.setdefault("connect_timeout", CONNECT_TIMEOUT)
    given.setdefault("application_name", "pta-broker")
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    given["options"] = f"{given['options']} {options}" if given.get("options") else options
    return make_conninfo("", **given)


class Database:
    """A pool of autocommit connections to one PostgreSQL database, failures mapped."""

    def __init__(self, url: str) -> None:
        """Prepare the pool; nothing connects until :meth:`open_pool` (or :meth:`direct`).

        Raises:
            ValueError: When ``url`` is not a PostgreSQL URL.
        """
        self._conninfo = conninfo(url)
        #: The URL as it may be shown.
        self.where = redact(url)
        password = conninfo_to_dict(self._conninfo).get("password")
        self._password = str(password) if password else ""
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] | None = None
        #: Whether the last pooled call failed for want of the server, and why the last
        #: failure that said why (a pool timeout does not).
        self._down = False
        self._probing = threading.Lock()
        self._reason = ""
        #: Calls that failed for want of the server (refused at once while down included).
        self.failures = 0

    def __repr__(self) -> str:
        """Where, never with the password."""
        return f"Database({self.where!r})"

    @contextlib.contextmanager
    def mapped(self) -> Iterator[None]:
        """Turn the driver's "cannot reach the server" into :class:`StoreUnavailable`.

        Raises:
            StoreUnavailable: For ``OperationalError`` and ``PoolTimeout``; its detail names
                the store (redacted) and libpq's reason, scrubbed of the password.
        """
        try:
            yield
        except psycopg.OperationalError as error:
            self.failures += 1
            reason = (str(error).strip() or type(error).__name__).splitlines()[0]
            if isinstance(error, PoolTimeout) and self._reason:
                reason = f"{reason}; the last failure: {self._reason}"
            else:
                self._reason = reason
            detail = f"{self.where}: {reason}"
            if self._password:
                detail = detail.replace(self._password, "***")
            raise StoreUnavailable(UNAVAILABLE, detail) from error

    @contextlib.contextmanager
    def direct(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A connection of its own, outside the pool: its failure to connect says why.

        Raises:
            StoreUnavailable: When the server cannot be reached (refused, unknown, timeout,
                authentication).
        """
        with self.mapped(), psycopg.connect(self._conninfo, autocommit=True) as conn:
            yield conn

    def open_pool(self) -> None:
        """Start the pool (its first connection is made in the background)."""
        self._pool = ConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name="pta-store",
            open=True,
        )

    def close(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            self._pool.close()

    def check_reachable(self) -> None:
        """Raise when the server is known to be down (no I/O: the last call's verdict).

        Raises:
            StoreUnavailable: Until the probe reaches the server again.
        """
        if self._down:
            self.failures += 1
            raise StoreUnavailable(UNAVAILABLE, f"{self.where}: {self._reason or 'down'}")

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A pooled connection for the body (autocommit), cut if the body overstays.

        While the server is known to be down, calls fail at once, without waiting on the
        pool: a thread of its own (:meth:`_probe`) finds out when it is back.

        Raises:
            StoreUnavailable: When none can be had in time, or the server goes away or does
                not answer within :data:`CALL_TIMEOUT`.
        """
        if self._pool is None:
            raise RuntimeError("the store is closed")
        self.check_reachable()
        try:
            with (
                self.mapped(),
                self._pool.connection(POOL_TIMEOUT) as conn,
                WATCHDOG.watch(conn.fileno(), CALL_TIMEOUT),
            ):
                yield conn
        except StoreUnavailable:
            self._went_down()
            raise

    def _went_down(self) -> None:
        """Fail every call at once from now on, until the probe reaches the server."""
        with self._probing:
            if self._down:
                return
            self._down = True
            threading.Thread(target=self._probe, name="pta-store-probe", daemon=True).start()

    def _probe(self) -> None:
        """Try the server every :data:`PROBE_INTERVAL` until it answers; then let calls in.

        The pool's idle connections are checked first: a server that restarted left them
        broken, and each would otherwise fail one call.
        """
        while self._pool is not None and not self._pool.closed:
            time.sleep(PROBE_INTERVAL)
            try:
                with self.direct() as conn, WATCHDOG.watch(conn.fileno(), CALL_TIMEOUT):
                    conn.execute("SELECT 1")
                self._pool.check()
            except (StoreUnavailable, psycopg.Error):
                continue
            with self._probing:
                self._down = False
            return

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A pooled connection in a transaction: committed when the body returns, else undone.

        Raises:
            StoreUnavailable: As :meth:`connection`.
        """
        with self.connection() as conn, conn.transaction():
            yield conn

    def rows(self, query: LiteralString, params: Sequence[object] = ()) -> list[Row]:
        """Every row of one statement."""
        with self.connection() as conn:
            return conn.execute(query, params).fetchall()

    def row(self, query: LiteralString, params: Sequence[object] = ()) -> Row | None:
        """The first row of one statement, if any."""
        with self.connection() as conn:
            return conn.execute(query, params).fetchone()

    def run(self, query: LiteralString, params: Sequence[object] = ()) -> int:
        """Run one statement; how many rows it touched."""
        with self.connection() as conn:
            return conn.execute(query, params).rowcount
