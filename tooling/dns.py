"""A throwaway DNS server that answers one name with several addresses, for tests and demos.

Several brokers behind one DNS name is how clients are meant to find them (README, "Several
brokers"), and the machine's own resolver cannot be told a name without editing system
files. This server answers real DNS queries over UDP on a free 127.0.0.1 port: A records for
its one name, nothing else (NXDOMAIN for other names, no records for other types). gRPC's
resolver asks it directly when the target names it as the authority:
``dns://127.0.0.1:PORT/NAME:BROKER_PORT``.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from types import TracebackType

#: Seconds a client may cache the answer: short, so that a changed set is seen soon.
TTL: Final = 5
_HEADER = struct.Struct(">HHHHHH")
_A, _IN = 1, 1
_RESPONSE, _AUTHORITATIVE, _NXDOMAIN = 0x8000, 0x0400, 3
#: How long the server waits for a query before it looks whether it is told to stop.
_POLL = 0.05


class NameServer:
    """Answers ``name`` with ``addresses`` (IPv4) until it is left; a context manager."""

    def __init__(self, name: str, addresses: list[str]) -> None:
        """Bind a free UDP port on 127.0.0.1 (``port``); answer nothing until entered."""
        self.name = name.lower().rstrip(".")
        self.addresses = [socket.inet_aton(address) for address in addresses]
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(_POLL)
        self._stop = threading.Event()
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="dns", daemon=True)
        #: How many queries for the name were answered with its addresses.
        self.answered = 0

    def __enter__(self) -> Self:
        """Start answering."""
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop answering (within :data:`_POLL`), and close the socket."""
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self._socket.recvfrom(512)
            except TimeoutError:  # Nothing came: look whether to stop.
                continue
            if (reply := self.reply(query)) is not None:
                self._socket.sendto(reply, peer)

    def reply(self, query: bytes) -> bytes | None:
        """The answer to one query, or None for bytes that are not a query of one question."""
        try:
            ident, _flags, questions = struct.unpack_from(">HHH", query)
            labels, end = [], _HEADER.size
            while length := query[end]:
                labels.append(query[end + 1 : end + 1 + length].decode("ascii"))
                end += 1 + length
            qtype, _qclass = struct.unpack_from(">HH", query, end + 1)
        except (struct.error, IndexError, UnicodeDecodeError):
            return None
        if questions != 1:
            return None
        question = query[_HEADER.size : end + 5]
        known = ".".join(labels).lower() == self.name
        records = self.addresses if known and qtype == _A else []
        if records:
            self.answered += 1
        flags = _RESPONSE | _AUTHORITATIVE | (0 if known else _NXDOMAIN)
        answers = b"".join(
            # A pointer to the question's name (offset 12), then type, class, TTL, the address.
            b"\xc0\x0c" + struct.pack(">HHIH", _A, _IN, TTL, 4) + address
            for address in records
        )
        return _HEADER.pack(ident, flags, 1, len(records), 0, 0) + question + answers
