"""``tooling/dns.py``: the test DNS server's answers, over real UDP.

gRPC's own resolver reading its answers is ``tests/test_client_failover_dns.py``; here, queries
made by hand show what it answers to everything else.
"""

from __future__ import annotations

import socket
import struct

import pytest

from tooling.dns import NameServer

NAME = "brokers.pta.test"
A, AAAA = 1, 28


def _query(name: str, qtype: int, ident: int = 7) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return (
        struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack(">HH", qtype, 1)
    )


def _ask(server: NameServer, query: bytes) -> tuple[int, int, list[str]]:
    """Send ``query`` over UDP: the reply's id, response code, and the addresses it gives."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(query, ("127.0.0.1", server.port))
        reply = client.recv(512)
    ident, flags, _, count, _, _ = struct.unpack_from(">HHHHHH", reply)
    answers = reply[len(query) :]
    addresses = [socket.inet_ntoa(answers[n * 16 + 12 : n * 16 + 16]) for n in range(count)]
    return ident, flags & 0xF, addresses


class TestNameServer:
    """One name, its IPv4 addresses; nothing else."""

    @pytest.mark.parametrize(
        ("name", "qtype", "rcode", "addresses"),
        [
            (NAME, A, 0, ["127.0.0.1", "127.0.0.2"]),
            ("Brokers.PTA.test", A, 0, ["127.0.0.1", "127.0.0.2"]),
            (NAME, AAAA, 0, []),
            ("other.pta.test", A, 3, []),
        ],
        ids=["its-name", "any-case", "no-ipv6", "other-name-nxdomain"],
    )
    def test_answers(self, name: str, qtype: int, rcode: int, addresses: list[str]) -> None:
        """The reply carries the query's id, the response code and the records asked for."""
        with NameServer(NAME, ["127.0.0.1", "127.0.0.2"]) as server:
            assert _ask(server, _query(name, qtype, ident=4242)) == (4242, rcode, addresses)
            assert server.answered == (1 if addresses else 0)

    def test_garbage_is_not_answered(self) -> None:
        """Bytes that are not one question get no reply; the server goes on answering."""
        with NameServer(NAME, ["127.0.0.1"]) as server:
            assert server.reply(b"\x00\x01") is None
            assert server.reply(_query(NAME, A)[:-3]) is None
            assert _ask(server, _query(NAME, A))[2] == ["127.0.0.1"]
