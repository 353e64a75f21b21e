"""The sign-in's LDAP on the event loop: pools of connections, each one request at a time.

ldap3 blocks, so the agent used to hand every bind and every search to a worker thread: two
thread hops a batch (≈ 0.1 ms each on our machines), a GIL shared by those threads and the
event loop that also runs the gRPC stream, and pyasn1 encoding the requests. A sign-in asks the
directory at most two simple things: where the user is (a search by one attribute, for no
attributes) and whether the password is right (a simple bind). Both are done here instead, as
asyncio transports: the requests encoded by :mod:`agent.ldapwire` (the same bytes as ldap3's,
tests compare), the answers decoded by ldap3's own fast decoder (the same functions
``Connection.bind`` and ``Connection.search`` end in). A prototype against slapd, one process:
0.14 instead of 0.33 ms of CPU a bind at one in flight, 0.08 instead of 0.20-0.30 at eight.
Password changes and policy reads stay on ldap3's connections in worker threads
(:mod:`agent.directory`); one connection's bytes are :mod:`agent.ldapconn`'s.

What ldap3's server pool did, this keeps: the URLs are tried in order, a server that could not
be reached is skipped for :data:`SERVER_EXHAUST_SECONDS`, ``ldaps://`` and StartTLS are
verified against the directory's CA (host name included), and a failure to talk to the
directory is never a wrong password. A bind is sent once: a connection the directory closed
or announced it would close (a notice of disconnection) while idle is noticed before it is used,
as its transport reads while idle, and replaced; any failure once the request is on the wire is
DIRECTORY_UNAVAILABLE, never a second try that could count a wrong password twice.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent import ldapwire
from agent.ldapconn import (
    Connection,
    ConnectionLost,
    LdapProtocol,
    Message,
    bind_result,
    search_result,
)
from agent.metrics import OFF
from agent.outcomes import SUCCESS_CODE
from pta.errors import DirectoryUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.metrics import Counts

#: Seconds a server that could not be reached is skipped before it is tried again.
SERVER_EXHAUST_SECONDS = 10.0
DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}


class _Pool:
    """At most ``size`` connections to one directory, each kept open for the next request."""

    def __init__(  # noqa: PLR0913 - the directory's settings, by name
        self,
        urls: tuple[str, ...],
        *,
        size: int,
        connect_timeout: float,
        receive_timeout: float,
        tls: ssl.SSLContext,
        start_tls: bool,
        clock: Callable[[], float] = time.monotonic,
        metrics: Counts = OFF,
    ) -> None:
        """Describe the pool; nothing is dialled before the first request.

        Args:
            urls: ``ldap://`` or ``ldaps://`` URLs, tried in this order.
            size: How many requests may run at once (one connection each).
            connect_timeout: Seconds to connect to one server (StartTLS included).
            receive_timeout: Seconds to wait for an answer.
            tls: Verifies ``ldaps://`` servers and StartTLS (:func:`tls_context`).
            start_tls: Upgrade ``ldap://`` connections before the first request.
            clock: Monotonic seconds (tests).
            metrics: Where each request's time and each server's state are counted.
        """
        self._urls = urls
        self._size = size
        self._connect_timeout = connect_timeout
        self._receive_timeout = receive_timeout
        self._tls = tls
        self._start_tls = start_tls
        self._clock = clock
        self._metrics = metrics
        self._idle: list[Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._exhausted: dict[str, float] = {}

    def close(self) -> None:
        """Close the idle connections; requests still running close theirs when they end."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    #: What this pool's requests are, in the metrics.
    operation = "request"

    async def _request(
        self, encode: Callable[[int], bytes], *, idempotent: bool = False
    ) -> list[Message]:
        """Send one request on an idle (or new) connection and return its answer.

        Args:
            encode: Makes the request for a message id.
            idempotent: Whether the request may be sent again on a fresh connection when an
                idle one turns out closed before its answer (a search); never a bind, which
                the directory may have counted already.

        Raises:
            DirectoryUnavailable: No server could be reached, or the connection ended or
                fell silent before the answer.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            conn = self._take_idle()
            if conn is not None and idempotent:
                try:
                    return await self._exchange(conn, encode)
                except DirectoryUnavailable as error:
                    if not isinstance(error.__cause__, ConnectionLost):
                        raise
                conn = None  # Closed under the request: once more, on a fresh connection.
            return await self._exchange(conn or await self._connect(), encode)

    async def _exchange(self, conn: Connection, encode: Callable[[int], bytes]) -> list[Message]:
        """One request on ``conn``, which goes back to the idle ones unless it broke.

        Raises:
            DirectoryUnavailable: The connection ended or fell silent before the answer.
        """
        started = time.perf_counter()
        try:
            answer = await conn.exchange(encode)
        except ConnectionLost as error:
            conn.close()
            self._metrics.server_up(conn.server, up=False, reason="closed the connection")
            raise DirectoryUnavailable("the directory closed the connection") from error
        except TimeoutError as error:
            self._metrics.server_up(conn.server, up=False, reason="did not answer in time")
            raise DirectoryUnavailable("the directory did not answer in time") from error
        except BaseException:
            conn.close()  # Cancelled, or a request that could not be encoded: never reused.
            raise
        self._metrics.directory_request(conn.server, self.operation, time.perf_counter() - started)
        self._metrics.server_up(conn.server, up=True)
        if conn.usable:
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    def _take_idle(self) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                return conn
            conn.close()
        return None

    async def _connect(self) -> Connection:
        """Open a connection to the first server that answers, skipping recent failures.

        Raises:
            DirectoryUnavailable: No server could be reached (or all failed recently).
        """
        now = self._clock()
        candidates = [url for url in self._urls if self._exhausted.get(url, 0.0) <= now]
        failure: BaseException | None = None
        for url in candidates:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    conn = await self._dial(url)
            except (OSError, ConnectionLost, TimeoutError) as error:
                self._exhausted[url] = self._clock() + SERVER_EXHAUST_SECONDS
                self._metrics.server_up(url, up=False, reason=_why(error, self._connect_timeout))
                failure = error
                continue
            self._exhausted.pop(url, None)
            try:
                await self._opened(conn)
            except BaseException:
                conn.close()
                raise
            return conn
        reason = "could not reach the directory" if candidates else "every server failed lately"
        raise DirectoryUnavailable(reason) from failure

    async def _opened(self, conn: Connection) -> None:
        """Prepare a new connection before its first request (nothing by default)."""

    async def _dial(self, url: str) -> Connection:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        secure = parts.scheme == "ldaps"
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            LdapProtocol,
            host,
            port,
            ssl=self._tls if secure else None,
            server_hostname=host if secure else None,
        )
        conn = Connection(protocol, self._receive_timeout, server=url)
        try:
            if self._start_tls and not secure:
                await conn.start_tls(self._tls, host)
        except BaseException:
            conn.close()
            raise
        return conn


class BindPool(_Pool):
    """Connections that bind as users: each bind leaves its connection bound as that user."""

    operation = "bind"

    async def bind(self, dn: str, password: bytes, controls: tuple[bytes, ...]) -> dict[str, Any]:
        """Bind as ``dn`` (``password`` already SASLprepped) and return ldap3's result dict.

        Raises:
            DirectoryUnavailable: No server could be reached, the answer did not come in
                time, or it was not a bind response. Never for what the directory answered.
        """

        def encode(message_id: int) -> bytes:
            return ldapwire.bind_request(message_id, dn, password, controls)

        answer = await self._request(encode)
        try:
            return bind_result(answer[-1])
        except ValueError as error:
            raise DirectoryUnavailable("the directory's answer could not be read") from error


class SearchPool(_Pool):
    """Connections that find users, as the service account (or anonymously): never a user's."""

    operation = "search"

    def __init__(
        self, urls: tuple[str, ...], *, service: tuple[str, bytes] | None, **settings: Any
    ) -> None:
        """As :class:`_Pool`; ``service`` is the account's DN and SASLprepped password."""
        super().__init__(urls, **settings)
        self._service = service

    async def _opened(self, conn: Connection) -> None:
        """Bind a new connection as the service account.

        Raises:
            DirectoryUnavailable: The directory refused the service account (its reason).
        """
        if self._service is None:
            return  # Anonymous: LDAPv3 needs no bind to search.
        dn, password = self._service

        def encode(message_id: int) -> bytes:
            return ldapwire.bind_request(message_id, dn, password, ())

        try:
            result = bind_result((await conn.exchange(encode))[-1])
        except (ConnectionLost, TimeoutError, ValueError) as error:
            raise DirectoryUnavailable("the directory did not answer the service bind") from error
        if result["result"] != SUCCESS_CODE:
            raise DirectoryUnavailable(f"service bind failed: {result['description']}")

    async def find(
        self, base_dn: str, attribute: str, value: str, *, size_limit: int
    ) -> tuple[int, list[str]]:
        """Search the subtree under ``base_dn`` for ``attribute`` = ``value``.

        Returns:
            The search's result code and the DNs found (at most ``size_limit``).

        Raises:
            DirectoryUnavailable: As for a bind, or for an answer that is not a search result.
        """

        def encode(message_id: int) -> bytes:
            return ldapwire.search_request(
                message_id, base_dn, attribute, value, size_limit=size_limit
            )

        answer = await self._request(encode, idempotent=True)
        try:
            return search_result(answer)
        except ValueError as error:
            raise DirectoryUnavailable("the directory's answer could not be read") from error


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify the directory by its certificate and name: against ``ca_file``, else the system's.

    The same checks as the ldap3 ``Tls`` the worker threads' connections use
    (``agent/directory.py``).
    """
    return ssl.create_default_context(cafile=ca_file)


def _why(error: BaseException, timeout: float) -> str:
    """Why a server could not be reached, as an operator reads it (never a user's name)."""
    if isinstance(error, TimeoutError):
        return f"no connection within {timeout:g} s"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot connect: {error.strerror.lower()}"
    return f"cannot connect: {type(error).__name__}"
