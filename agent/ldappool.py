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
(:mod:`agent.directory`).

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
from ldap3.utils.asn1 import decode_message_fast, ldap_result_to_dict_fast
from ldap3.utils.conv import to_unicode

from agent import ldapwire
from pta.errors import DirectoryUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

#: Seconds a server that could not be reached is skipped before it is tried again.
SERVER_EXHAUST_SECONDS = 10.0
#: The most bytes one answer may take, all its messages together: answers here are a few
#: hundred bytes; this big is not one of them. Per answer, not per message: ldap3's decoder
#: turns a mebibyte of small BER elements into ≈ 45 MB of tuples, on the event loop.
MAX_MESSAGE_BYTES = 1 << 20
#: The most messages one answer may take (a search asks for two entries at most).
MAX_MESSAGES = 64
DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}
BIND_RESPONSE = 1  # protocolOp [APPLICATION 1]
SEARCH_RESULT_ENTRY = 4  # protocolOp [APPLICATION 4]
SEARCH_RESULT_DONE = 5  # protocolOp [APPLICATION 5]
SEARCH_RESULT_REFERENCE = 19  # protocolOp [APPLICATION 19]
EXTENDED_RESPONSE = 24  # protocolOp [APPLICATION 24]
INTERMEDIATE_RESPONSE = 25  # protocolOp [APPLICATION 25]
#: Messages after which more of the same answer follow.
NOT_LAST = frozenset({SEARCH_RESULT_ENTRY, SEARCH_RESULT_REFERENCE, INTERMEDIATE_RESPONSE})
SUCCESS = 0

Message = dict[str, Any]  # ldap3's fast decoder's dict of one LDAPMessage


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
        self._answer: list[Message] = []
        self._answer_bytes = 0
        self._waiter: asyncio.Future[list[Message]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # A stream socket's always is.
            raise TypeError("an LDAP connection needs a stream transport")
        self.transport = transport

    @property
    def buffered(self) -> bool:
        """Whether bytes of a message not yet whole are waiting."""
        return bool(self._buffer)

    def expect(self, message_id: int, waiter: asyncio.Future[list[Message]]) -> None:
        """Hand the answer to ``message_id`` to ``waiter`` (one request at a time)."""
        self._expected, self._answer, self._waiter = message_id, [], waiter
        self._answer_bytes = 0

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while not self.broken:
            try:
                size = ldapwire.message_size(self._buffer)
            except ValueError as error:
                self._break(ConnectionLost(f"the directory sent something else: {error}"))
                return
            if size > MAX_MESSAGE_BYTES - self._answer_bytes:
                self._break(ConnectionLost("the directory's answer is too large"))
                return
            if size < 0 or len(self._buffer) < size:
                return
            self._answer_bytes += size
            raw = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._deliver(raw)

    def _deliver(self, raw: bytes) -> None:
        try:
            # The stubs leave ldap3's fast decoder untyped: a dict of the message's parts.
            message: Message = decode_message_fast(raw)  # type: ignore[no-untyped-call]
        except Exception as error:  # noqa: BLE001 - whatever ldap3 raises for bad bytes
            self._break(ConnectionLost(f"undecodable answer ({type(error).__name__})"))
            return
        waiter = self._waiter
        if waiter is None or message["messageID"] != self._expected:
            # A notice of disconnection (message id 0), or an answer nobody waits for.
            self._break(ConnectionLost("the directory is closing the connection"))
            return
        self._answer.append(message)
        if message["protocolOp"] in NOT_LAST:
            if len(self._answer) >= MAX_MESSAGES:
                self._break(ConnectionLost("the directory's answer is too long"))
            return
        self._waiter = None
        if not waiter.done():
            waiter.set_result(self._answer)

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
        """Whether the next request may go on this connection.

        Not when it broke, nor when bytes arrived since its last answer (part of a message
        nobody asked for: the next answer would be read after them), nor when its message ids
        ran out.
        """
        protocol = self._protocol
        return not protocol.broken and not protocol.buffered and self._last_id < ldapwire.MAX_INT

    def close(self) -> None:
        self._protocol.broken = True
        if self._protocol.transport is not None:
            # After its event loop has closed, the transport's socket closes when collected.
            with contextlib.suppress(RuntimeError):
                self._protocol.transport.close()

    async def exchange(self, encode: Callable[[int], bytes]) -> list[Message]:
        """Send the request ``encode`` makes for the next message id; return its answer.

        Returns:
            The answer's messages, the last one final (a bind or search result ...).

        Raises:
            ConnectionLost: The connection ended before the answer.
            TimeoutError: No answer within the receive timeout (the connection is closed).
        """
        protocol = self._protocol
        if protocol.broken or protocol.transport is None:
            raise ConnectionLost("the connection is closed")
        self._last_id += 1
        waiter: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()
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
        answer = (await self.exchange(ldapwire.start_tls_request))[-1]
        try:
            code = int(answer["payload"][0][3]) if answer["protocolOp"] == EXTENDED_RESPONSE else -1
        except (IndexError, TypeError, ValueError) as error:
            raise ConnectionLost(f"unreadable StartTLS answer ({type(error).__name__})") from error
        if code != SUCCESS:
            raise ConnectionLost(f"StartTLS was refused (result {code})")
        protocol = self._protocol
        if protocol.broken or protocol.buffered or protocol.transport is None:
            # Nothing may come between the answer and the handshake (RFC 4511 §4.14.2): bytes
            # that did came in the clear, from anyone on the path, and would be read as the
            # start of the first answer over TLS (a forged bind result).
            raise ConnectionLost("StartTLS failed: the directory sent data before the handshake")
        loop = asyncio.get_running_loop()
        try:
            upgraded = await loop.start_tls(
                protocol.transport, protocol, context, server_hostname=host
            )
        except (ssl.SSLError, ssl.CertificateError) as error:
            raise ConnectionLost(f"StartTLS failed: {error}") from error
        if not isinstance(upgraded, asyncio.Transport):
            raise ConnectionLost("StartTLS failed: the connection closed")
        protocol.transport = upgraded
        if protocol.broken or protocol.buffered:
            raise ConnectionLost("StartTLS failed: the directory sent data before the handshake")


def bind_result(message: Message) -> dict[str, Any]:
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


def search_result(messages: list[Message]) -> tuple[int, list[str]]:
    """The result code of a search and the DNs of the entries it found (references ignored).

    Raises:
        ValueError: The answer does not end in a search result, or ldap3 cannot read it.
    """
    done = messages[-1]
    if done["protocolOp"] != SEARCH_RESULT_DONE:
        raise ValueError("the answer to a search is not a search result")
    try:
        code = int(ldap_result_to_dict_fast(done["payload"])["result"])  # type: ignore[no-untyped-call]
        dns = [
            str(to_unicode(m["payload"][0][3], from_server=True))
            for m in messages[:-1]
            if m["protocolOp"] == SEARCH_RESULT_ENTRY
        ]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"unreadable search result ({type(error).__name__})") from error
    return code, dns


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
        """Close the idle connections; requests still running close theirs when they end."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

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

    async def _exchange(self, conn: _Connection, encode: Callable[[int], bytes]) -> list[Message]:
        """One request on ``conn``, which goes back to the idle ones unless it broke.

        Raises:
            DirectoryUnavailable: The connection ended or fell silent before the answer.
        """
        try:
            answer = await conn.exchange(encode)
        except ConnectionLost as error:
            conn.close()
            raise DirectoryUnavailable("the directory closed the connection") from error
        except TimeoutError as error:
            raise DirectoryUnavailable("the directory did not answer in time") from error
        except BaseException:
            conn.close()  # Cancelled, or a request that could not be encoded: never reused.
            raise
        if conn.usable:
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                return conn
            conn.close()
        return None

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
            try:
                await self._opened(conn)
            except BaseException:
                conn.close()
                raise
            return conn
        reason = "could not reach the directory" if candidates else "every server failed lately"
        raise DirectoryUnavailable(reason) from failure

    async def _opened(self, conn: _Connection) -> None:
        """Prepare a new connection before its first request (nothing by default)."""

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


class BindPool(_Pool):
    """Connections that bind as users: each bind leaves its connection bound as that user."""

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

    def __init__(
        self, urls: tuple[str, ...], *, service: tuple[str, bytes] | None, **settings: Any
    ) -> None:
        """As :class:`_Pool`; ``service`` is the account's DN and SASLprepped password."""
        super().__init__(urls, **settings)
        self._service = service

    async def _opened(self, conn: _Connection) -> None:
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
        if result["result"] != SUCCESS:
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
