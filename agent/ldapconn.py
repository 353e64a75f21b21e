"""One LDAP connection on the event loop: whole messages in, each handed to its request.

The transport half of :mod:`agent.ldappool`: framing (``agent.ldapwire.message_size``), matching
an answer to the one request in flight by its message id, StartTLS, and ldap3's own fast decoder
for what the answers mean. A connection carries one request at a time and is closed, never
reused, once anything unasked arrives (a notice of disconnection, a late answer, stray bytes),
once a request times out or is cancelled with its answer pending, and once an answer grows past
its bound: so an answer can never be read as another request's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING, Any

from ldap3.operation.bind import bind_response_to_dict_fast
from ldap3.strategy.base import BaseStrategy
from ldap3.utils.asn1 import decode_message_fast, ldap_result_to_dict_fast
from ldap3.utils.conv import to_unicode

from agent import ldapwire
from agent.outcomes import SUCCESS_CODE

if TYPE_CHECKING:
    from collections.abc import Callable

#: The most bytes one answer may take, all its messages together: answers here are a few
#: hundred bytes; this big is not one of them. Per answer, not per message: ldap3's decoder
#: turns a mebibyte of small BER elements into ≈ 45 MB of tuples, on the event loop.
MAX_MESSAGE_BYTES = 1 << 20
#: The most messages one answer may take (a search asks for two entries at most).
MAX_MESSAGES = 64
BIND_RESPONSE = 1  # protocolOp [APPLICATION 1]
SEARCH_RESULT_ENTRY = 4  # protocolOp [APPLICATION 4]
SEARCH_RESULT_DONE = 5  # protocolOp [APPLICATION 5]
SEARCH_RESULT_REFERENCE = 19  # protocolOp [APPLICATION 19]
EXTENDED_RESPONSE = 24  # protocolOp [APPLICATION 24]
INTERMEDIATE_RESPONSE = 25  # protocolOp [APPLICATION 25]
#: Messages after which more of the same answer follow.
NOT_LAST = frozenset({SEARCH_RESULT_ENTRY, SEARCH_RESULT_REFERENCE, INTERMEDIATE_RESPONSE})

Message = dict[str, Any]  # ldap3's fast decoder's dict of one LDAPMessage


class ConnectionLost(ConnectionError):
    """The connection ended, or said it would (a notice of disconnection), before the answer."""


class LdapProtocol(asyncio.Protocol):
    """One connection's bytes: whole LDAP messages, each handed to the request awaiting it.

    Anything the connection did not ask for (a notice of disconnection, an answer to a request
    given up on) means the connection is done: it is closed and never used again.
    """

    def __init__(self) -> None:
        """Start with no transport (asyncio hands it over) and nothing asked."""
        self.transport: asyncio.Transport | None = None
        self.broken = False
        self._buffer = bytearray()
        self._expected = 0
        self._answer: list[Message] = []
        self._answer_bytes = 0
        self._waiter: asyncio.Future[list[Message]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport, to write requests and to close it."""
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
        """Deliver every whole message; anything malformed or too large breaks the connection."""
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
        """The directory (or the network) closed it: a waiting request learns so at once."""
        self._break(ConnectionLost("the directory closed the connection"), closed=True)

    def _break(self, error: ConnectionLost, *, closed: bool = False) -> None:
        self.broken = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if not closed and self.transport is not None:
            self.transport.close()


class Connection:
    """One open connection to one server; one request at a time."""

    def __init__(self, protocol: LdapProtocol, receive_timeout: float, *, server: str = "") -> None:
        """Wrap a connected protocol; message ids start at 1. ``server``: its URL."""
        self.server = server
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
        """Never use it again, and close its transport."""
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
        if code != SUCCESS_CODE:
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
