"""``agent/ldapconn.py``: one LDAP connection on the event loop, message by message.

A real slapd for real answers (a bind, a search, their results as ldap3 reads them); a scripted
server (:mod:`tests.agent.scripted_ldap`) for what a directory or someone on the path could
send that no real directory sends on demand: answers to nobody, endless answers, bytes
slipped in before a TLS handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

import pytest

from agent import ldapwire
from agent.ldapconn import (
    MAX_MESSAGES,
    Connection,
    ConnectionLost,
    LdapProtocol,
    bind_result,
    search_result,
)
from tests.agent.scripted_ldap import Scripted, result, search_done, success
from tests.secrets_registry import secret
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

PASSWORD = secret("Conn-pw-1!")
SEARCH_ENTRY = 0x64  # [APPLICATION 4], constructed


@pytest.fixture(scope="module")
def conn_slapd() -> Iterator[Slapd]:
    """A private slapd with one user."""
    with Slapd(users=[DirectoryUser(uid="carol", password=PASSWORD)]) as server:
        yield server


async def connect(url: str, receive_timeout: float = 2.0) -> Connection:
    """A :class:`Connection` to ``ldap://host:port``."""
    host, port = url.removeprefix("ldap://").rsplit(":", 1)
    _, protocol = await asyncio.get_running_loop().create_connection(LdapProtocol, host, int(port))
    return Connection(protocol, receive_timeout)


def entry(message_id: int, dn: bytes) -> bytes:
    """A search result entry for ``dn`` with no attributes."""
    body = b"\x04" + bytes((len(dn),)) + dn + b"\x30\x00"
    op = bytes((SEARCH_ENTRY, len(body))) + body
    message = b"\x02\x01" + bytes((message_id,)) + op
    return b"\x30" + bytes((len(message),)) + message


@pytest.fixture
async def slapd_conn(conn_slapd: Slapd) -> AsyncIterator[Connection]:
    """A connection to the real slapd, closed after the test."""
    conn = await connect(conn_slapd.url)
    yield conn
    conn.close()


class TestAgainstSlapd:
    """Requests encoded by hand, answers decoded as ldap3 decodes them."""

    async def test_bind_right_and_wrong(self, conn_slapd: Slapd, slapd_conn: Connection) -> None:
        """A right password binds (0); a wrong one is 49; the connection stays usable."""
        dn = conn_slapd.user_dn("carol")
        right = await slapd_conn.exchange(
            lambda mid: ldapwire.bind_request(mid, dn, PASSWORD.encode(), ())
        )
        assert bind_result(right[-1])["result"] == 0
        wrong = await slapd_conn.exchange(
            lambda mid: ldapwire.bind_request(mid, dn, secret("wrong").encode(), ())
        )
        assert bind_result(wrong[-1])["result"] == 49
        assert slapd_conn.usable

    async def test_search_finds_the_dn(self, conn_slapd: Slapd, slapd_conn: Connection) -> None:
        """An equality search on uid: the result code and the entry's DN."""
        answer = await slapd_conn.exchange(
            lambda mid: ldapwire.search_request(
                mid, conn_slapd.base_dn, "uid", "carol", size_limit=2
            )
        )
        assert search_result(answer) == (0, [conn_slapd.user_dn("carol")])

    async def test_each_reader_refuses_the_other_answer(
        self, conn_slapd: Slapd, slapd_conn: Connection
    ) -> None:
        """A search result is no bind response, and the reverse: ValueError, not a guess."""
        dn = conn_slapd.user_dn("carol")
        bound = await slapd_conn.exchange(
            lambda mid: ldapwire.bind_request(mid, dn, PASSWORD.encode(), ())
        )
        with pytest.raises(ValueError, match="not a search result"):
            search_result(bound)
        searched = await slapd_conn.exchange(
            lambda mid: ldapwire.search_request(
                mid, conn_slapd.base_dn, "uid", "carol", size_limit=2
            )
        )
        with pytest.raises(ValueError, match="not a bind response"):
            bind_result(searched[-1])


class TestScripted:
    """What only a hostile or broken server sends."""

    async def test_message_ids_go_up(self) -> None:
        """Each request takes the next id; each answer is matched to it."""
        seen: list[int] = []

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            seen.append(message_id)
            writer.write(success(message_id))

        async with Scripted(answer) as url:
            conn = await connect(url)
            for _ in range(3):
                await conn.exchange(lambda mid: ldapwire.bind_request(mid, "cn=x", b"pw", ()))
            conn.close()
        assert seen == [1, 2, 3]

    async def test_an_answer_to_another_request_breaks_the_connection(self) -> None:
        """An answer with the wrong id is never taken as this request's: the connection ends."""

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(success(message_id + 1))

        async with Scripted(answer) as url:
            conn = await connect(url)
            with pytest.raises(ConnectionLost, match="closing"):
                await conn.exchange(lambda mid: ldapwire.bind_request(mid, "cn=x", b"pw", ()))
            assert not conn.usable

    async def test_an_endless_answer_is_cut(self) -> None:
        """More than MAX_MESSAGES entries for one search: ConnectionLost, not memory growth."""

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            for n in range(MAX_MESSAGES + 5):
                writer.write(entry(message_id, f"uid=u{n},dc=x".encode()))
            writer.write(search_done(message_id))

        async with Scripted(answer) as url:
            conn = await connect(url)
            with pytest.raises(ConnectionLost, match="too long"):
                await conn.exchange(
                    lambda mid: ldapwire.search_request(mid, "dc=x", "uid", "u", size_limit=2)
                )
            assert not conn.usable

    async def test_silence_times_out_and_closes(self) -> None:
        """No answer within the receive timeout: TimeoutError, and the connection is done."""

        async def answer(_message_id: int, _writer: asyncio.StreamWriter) -> None:
            return

        async with Scripted(answer) as url:
            conn = await connect(url, receive_timeout=0.2)
            with pytest.raises(TimeoutError):
                await conn.exchange(lambda mid: ldapwire.bind_request(mid, "cn=x", b"pw", ()))
            assert not conn.usable
            with pytest.raises(ConnectionLost, match="closed"):
                await conn.exchange(lambda mid: ldapwire.bind_request(mid, "cn=x", b"pw", ()))

    async def test_starttls_refused(self) -> None:
        """A directory that refuses StartTLS: ConnectionLost naming its result."""

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(result(message_id, 0x78, 2))

        async with Scripted(answer) as url:
            conn = await connect(url)
            with pytest.raises(ConnectionLost, match=r"refused \(result 2\)"):
                await conn.start_tls(ssl.create_default_context(), "127.0.0.1")

    async def test_bytes_before_the_handshake_are_refused(self) -> None:
        """Success, then bytes in the clear before TLS: refused (they could be a forged answer).

        RFC 4511 §4.14.2: nothing may come between the StartTLS answer and the handshake.
        Anyone on the path could slip in a bind result that the first answer over TLS would
        be read as.
        """

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(result(message_id, 0x78, 0) + success(message_id + 1))

        async with Scripted(answer) as url:
            conn = await connect(url)
            with pytest.raises(ConnectionLost, match="before the handshake"):
                await conn.start_tls(ssl.create_default_context(), "127.0.0.1")
