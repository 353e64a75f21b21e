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
connection (:data:`POOL_TIMEOUT`, :data:`DOWN_TIMEOUT` once a call failed) and a server-side
``statement_timeout`` bound every call.
psycopg's ``OperationalError`` (server gone or refusing, shut down, timed out) and the pool's
``PoolTimeout`` become :class:`pta.errors.StoreUnavailable`, which the RPC layer answers
UNAVAILABLE. A server that is frozen rather than gone (it accepts TCP and never answers) is
not bounded here beyond the statement timeout: the caller decides how long it waits.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from broker.store.location import check_url, redact
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
POOL_TIMEOUT = 1.5
#: No statement of this store takes long; one that does waits on a lock held by a stuck
#: session, and fails rather than hangs.
STATEMENT_TIMEOUT_MS = 5_000
#: Connections kept open, and the most lent at once.
POOL_MIN = 1
POOL_MAX = 8
#: After an outage, the pool's background attempts back off from 1 s; past this many seconds
#: it gives up, and the next call starts afresh (so recovery is never a long backoff away).
RECONNECT_TIMEOUT = 10.0
#: Once a call failed, the next ones wait this long only for a connection, until one succeeds:
#: while the server is down, each call fails at once rather than after POOL_TIMEOUT (the pool
#: keeps trying to reconnect in the background meanwhile).
DOWN_TIMEOUT = 0.05
#: What a caller (a client of the broker) reads: where the store is is none of its business.
UNAVAILABLE = "the broker's store does not answer: try again shortly"

Row = tuple[Any, ...]


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
        self._reason = ""

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

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A pooled connection for the body (autocommit).

        Raises:
            StoreUnavailable: When none can be had in time, or the server goes away.
        """
        if self._pool is None:
            raise RuntimeError("the store is closed")
        timeout = DOWN_TIMEOUT if self._down else POOL_TIMEOUT
        try:
            with self.mapped(), self._pool.connection(timeout) as conn:
                yield conn
        except StoreUnavailable:
            self._down = True
            raise
        self._down = False

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
