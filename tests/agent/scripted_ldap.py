"""A scripted LDAP server and hand-made answers: the cases no real directory makes on demand.

A notice of disconnection right after an answer, an answer to nobody, garbage, silence: the
connection code must stay safe through each, and only a server that speaks exactly those bytes
can show it. Real directories (slapd, Samba) cover everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from agent import ldapwire

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def notice() -> bytes:
    """A notice of disconnection (message id 0): the server is about to close."""
    oid = b"1.3.6.1.4.1.1466.20036"
    body = b"\x0a\x01\x34" + b"\x04\x00" + b"\x04\x00" + b"\x8a" + bytes((len(oid),)) + oid
    response = b"\x78" + bytes((len(body),)) + body
    message = b"\x02\x01\x00" + response
    return b"\x30" + bytes((len(message),)) + message


def success(message_id: int) -> bytes:
    """A successful bind response to ``message_id``."""
    response = b"\x61\x07\x0a\x01\x00\x04\x00\x04\x00"
    message = b"\x02\x01" + bytes((message_id,)) + response
    return b"\x30" + bytes((len(message),)) + message


def result(message_id: int, op: int, code: int) -> bytes:
    """An LDAPResult of protocolOp ``op`` (0x61 bind, 0x78 extended) with ``code``."""
    response = bytes((op,)) + b"\x07\x0a\x01" + bytes((code,)) + b"\x04\x00\x04\x00"
    message = b"\x02\x01" + bytes((message_id,)) + response
    return b"\x30" + bytes((len(message),)) + message


class Scripted:
    """A TCP server on 127.0.0.1 that answers each bind request as a test says."""

    def __init__(self, answer: Callable[[int, asyncio.StreamWriter], Awaitable[None]]) -> None:
        """Answer each request by calling ``answer(message_id, writer)``."""
        self.answer = answer
        self.requests = 0
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buffer = b""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                size = ldapwire.message_size(buffer)
                if size < 0 or len(buffer) < size:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                message, buffer = buffer[:size], buffer[size:]
                self.requests += 1
                await self.answer(message[4], writer)  # One-byte ids in these tests.

    async def __aenter__(self) -> str:
        """Listen on a free loopback port; its ``ldap://`` URL."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"ldap://127.0.0.1:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop listening."""
        assert self.server is not None
        self.server.close()


def search_done(message_id: int) -> bytes:
    """A successful search result (no entries) to ``message_id``."""
    response = b"\x65\x07\x0a\x01\x00\x04\x00\x04\x00"
    message = b"\x02\x01" + bytes((message_id,)) + response
    return b"\x30" + bytes((len(message),)) + message
