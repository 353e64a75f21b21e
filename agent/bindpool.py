"""Sign-in binds on the event loop: a few LDAP connections, each doing one bind at a time.

ldap3 blocks, so the agent used to hand every bind to a worker thread: two thread hops per
batch (≈ 0.1 ms each on our machines), a GIL shared by those threads and the event loop that
also runs the gRPC stream, and ldap3's receive loop on top. A simple bind is one request and
one answer, so sign-in binds are done here instead, as asyncio transports: the request encoded
by :mod:`agent.ldapwire`, the answer decoded by ldap3's own fast decoder (the same functions
``Connection.bind`` ends in). A prototype against slapd on one machine: 0.14 instead of 0.33 ms
of CPU a bind at one in flight, 0.08 instead of 0.20-0.30 at eight, and 0.27 instead of
0.46 ms a bind end to end. Searches, password changes and policy reads stay on ldap3's own
connections in worker threads (:mod:`agent.directory`).

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
import contextlib
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ldap3.operation.bind import bind_response_to_dict_fast
from ldap3.strategy.base import BaseStrategy
from ldap3.utils.asn1 import decode_message_fast

from agent import ldapwire
from pta.errors import DirectoryUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

#: Seconds a server that could not be reached is skipped before it is tried again.
SERVER_EXHAUST_SECONDS = 10.0
#: The largest answer read: a bind response is a few hundred bytes; anything this big is not one.
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}
BIND_RESPONSE = 1  # protocolOp [APPLICATION 1]
EXTENDED_RESPONSE = 24  # protocolOp [APPLICATION 24]
SUCCESS = 0


class ConnectionLost(ConnectionError):
    """The connection ended, or said it would (a notice of disconnection), before the answer."""


class _Protocol(asyncio.Protocol):
    """One connection's bytes: whole LDAP messages, each handed to the request awaiting it.

    Anything the connection did not ask for (a notice of disconnection, an answer to a request
    given up on) means the connection is done: it is closed and never used again.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.broken = False
        self._buffer = bytearray()
        self._expected = 0
        self._waiter: asyncio.Future[dict[str, Any]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def expect(self, message_id: int, waiter: asyncio.Future[dict[str, Any]]) -> None:
        """Hand the answer to ``message_id`` to ``waiter`` (one request at a time)."""
        self._expected, self._waiter = message_id, waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while not self.broken:
            try:
                size = ldapwire.message_size(self._buffer)
            except ValueError as error:
                self._break(ConnectionLost(f"the directory sent something else: {error}"))
                return
            if size > MAX_MESSAGE_BYTES:
                self._break(ConnectionLost("the directory's answer is too large"))
                return
            if size < 0 or len(self._buffer) < size:
                return
            raw = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._deliver(raw)

    def _deliver(self, raw: bytes) -> None:
        waiter, self._waiter = self._waiter, None
        try:
            # The stubs leave ldap3's fast decoder untyped: a dict of the message's parts.
            message: dict[str, Any] = decode_message_fast(raw)  # type: ignore[no-untyped-call]
        except Exception as error:  # noqa: BLE001 - whatever ldap3 raises for bad bytes
            self._waiter = waiter
            self._break(ConnectionLost(f"undecodable answer ({type(error).__name__})"))
            return
        if waiter is not None and message["messageID"] == self._expected:
            if not waiter.done():
                waiter.set_result(message)
            return
        # A notice of disconnection (message id 0), or an answer nobody waits for.
        self._waiter = waiter
        self._break(ConnectionLost("the directory is closing the connection"))

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio's
        self._break(ConnectionLost("the directory closed the connection"), closed=True)

    def _break(self, error: ConnectionLost, *, closed: bool = False) -> None:
        self.broken = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if not closed and self.transport is not None:
            self.transport.close()


class _Connection:
    """One open connection to one server; one request at a time."""

    def __init__(self, url: str, protocol: _Protocol, receive_timeout: float) -> None:
        self.url = url
        self._protocol = protocol
        self._receive_timeout = receive_timeout
        self._last_id = 0

    @property
    def usable(self) -> bool:
        return not self._protocol.broken and self._last_id < ldapwire.MAX_INT

    def close(self) -> None:
        self._protocol.broken = True
        if self._protocol.transport is not None:
            # After its event loop has closed, the transport's socket closes when collected.
            with contextlib.suppress(RuntimeError):
                self._protocol.transport.close()

    async def exchange(self, encode: Callable[[int], bytes]) -> dict[str, Any]:
        """Send the request ``encode`` makes for the next message id; return its answer.

        Raises:
            ConnectionLost: The connection ended before the answer.
            TimeoutError: No answer within the receive timeout (the connection is closed).
        """
        protocol = self._protocol
        if protocol.broken or protocol.transport is None:
            raise ConnectionLost("the connection is closed")
        self._last_id += 1
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        protocol.expect(self._last_id, waiter)
        protocol.transport.write(encode(self._last_id))
        try:
            async with asyncio.timeout(self._receive_timeout):
                return await waiter
        except BaseException:
            # Timed out or cancelled with the request on the wire: its late answer must never be
            # read as the next request's.
            self.close()
            raise

    async def start_tls(self, context: ssl.SSLContext, host: str) -> None:
        """Upgrade the connection (RFC 4511 §4.14) and verify the server by ``host``.

        Raises:
            ConnectionLost: The server refused StartTLS, or the handshake failed.
        """
        answer = await self.exchange(ldapwire.start_tls_request)
        code = int(answer["payload"][0][3]) if answer["protocolOp"] == EXTENDED_RESPONSE else -1
        if code != SUCCESS:
            raise ConnectionLost(f"StartTLS was refused (result {code})")
        protocol = self._protocol
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        try:
            upgraded = await loop.start_tls(
                protocol.transport, protocol, context, server_hostname=host
            )
        except (ssl.SSLError, ssl.CertificateError) as error:
            raise ConnectionLost(f"StartTLS failed: {error}") from error
        if upgraded is None:
            raise ConnectionLost("StartTLS failed: the connection closed")
        assert isinstance(upgraded, asyncio.Transport)
        protocol.transport = upgraded


def bind_result(message: dict[str, Any]) -> dict[str, Any]:
    """ldap3's dict of a bind response (``result``, ``message``, ``controls`` ...).

    What ``Connection.bind`` leaves in ``conn.result``, by the same ldap3 functions.

    Raises:
        ValueError: The answer is not a bind response, or not one ldap3 can read.
    """
    if message["protocolOp"] != BIND_RESPONSE:
        raise ValueError("the answer to a bind is not a bind response")
    try:
        result: dict[str, Any] = bind_response_to_dict_fast(message["payload"])  # type: ignore[no-untyped-call]
        if message["controls"]:
            result["controls"] = dict(
                BaseStrategy.decode_control_fast(control[3]) for control in message["controls"]
            )
    except (KeyError, IndexError, TypeError, ValueError) as error:  # e.g. an unknown code
        raise ValueError(f"unreadable bind response ({type(error).__name__})") from error
    return result


class BindPool:
    """At most ``size`` connections to one directory, each kept open for the next bind."""

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
    ) -> None:
        """Describe the pool; nothing is dialled before the first bind.

        Args:
            urls: ``ldap://`` or ``ldaps://`` URLs, tried in this order.
            size: How many binds may run at once (one connection each).
            connect_timeout: Seconds to connect to one server (StartTLS included).
            receive_timeout: Seconds to wait for a bind's answer.
            tls: Verifies ``ldaps://`` servers and StartTLS (:func:`tls_context`).
            start_tls: Upgrade ``ldap://`` connections before the first bind.
            clock: Monotonic seconds (tests).
        """
        self._urls = urls
        self._size = size
        self._connect_timeout = connect_timeout
        self._receive_timeout = receive_timeout
        self._tls = tls
        self._start_tls = start_tls
        self._clock = clock
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._exhausted: dict[str, float] = {}

    def close(self) -> None:
        """Close the idle connections; binds still running close theirs when they end."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def bind(self, dn: str, password: bytes, controls: tuple[bytes, ...]) -> dict[str, Any]:
        """Bind as ``dn`` (``password`` already SASLprepped) and return ldap3's result dict.

        Raises:
            DirectoryUnavailable: No server could be reached, the answer did not come in
                time, or it was not a bind response. Never for what the directory answered.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)

        def encode(message_id: int) -> bytes:
            return ldapwire.bind_request(message_id, dn, password, controls)

        async with self._slots:
            conn = self._take_idle() or await self._connect()
            message = await self._exchange(conn, encode)
        try:
            return bind_result(message)
        except ValueError as error:
            raise DirectoryUnavailable("the directory's answer could not be read") from error

    async def _exchange(self, conn: _Connection, encode: Callable[[int], bytes]) -> dict[str, Any]:
        """One request on ``conn``, which goes back to the pool unless it broke.

        Raises:
            DirectoryUnavailable: The connection ended before the answer, or no answer came in
                time. Never tried again: the directory may have checked the password already.
        """
        try:
            message = await conn.exchange(encode)
        except ConnectionLost as error:
            raise DirectoryUnavailable("the directory closed the connection") from error
        except TimeoutError as error:
            raise DirectoryUnavailable("the directory did not answer in time") from error
        except BaseException:
            conn.close()  # Cancelled, or a request that could not be encoded: never reused.
            raise
        self._release(conn)
        return message

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        if conn.usable:
            self._idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> _Connection:
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
                failure = error
                continue
            self._exhausted.pop(url, None)
            return conn
        reason = "could not reach the directory" if candidates else "every server failed lately"
        raise DirectoryUnavailable(reason) from failure

    async def _dial(self, url: str) -> _Connection:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        secure = parts.scheme == "ldaps"
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            _Protocol,
            host,
            port,
            ssl=self._tls if secure else None,
            server_hostname=host if secure else None,
        )
        conn = _Connection(url, protocol, self._receive_timeout)
        try:
            if self._start_tls and not secure:
                await conn.start_tls(self._tls, host)
        except BaseException:
            conn.close()
            raise
        return conn


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify the directory by its certificate and name: against ``ca_file``, else the system's.

    The same checks as the ldap3 ``Tls`` the search connections use (``agent/directory.py``).
    """
    return ssl.create_default_context(cafile=ca_file)
