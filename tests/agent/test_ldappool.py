"""``agent/ldappool.py``: the sign-in's searches and binds on the event loop.

Against real servers: slapd for what a directory answers (compared with what ldap3's own
``Connection.bind`` makes of the same bind), Samba AD for LDAPS and StartTLS. The connection's
edge cases that no real directory produces on demand (a notice of disconnection right after
an answer, a server that never answers) come from a scripted TCP server that speaks only the
bytes of those cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING, Any

import ldap3
import pytest

from agent import ldapwire, ppolicy
from agent.directory import PPOLICY_CONTROL
from agent.ldappool import BindPool, SearchPool, tls_context
from pta.errors import DirectoryUnavailable
from tests.agent.scripted_ldap import Scripted, notice, result, search_done, success
from tests.secrets_registry import secret
from tooling.samba import AdUser, SambaDC, samba_missing_reason
from tooling.samba_host import write_tls
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

POOL_USERS = {"alice": secret("Alice-pool-1!"), "bob": secret("Bob-pool-2!")}
AD_PASSWORD = secret("Ad-pool-pw-3!z")


SETTINGS: dict[str, Any] = {
    "size": 4,
    "connect_timeout": 2.0,
    "receive_timeout": 2.0,
    "tls": tls_context(None),
    "start_tls": False,
}


def _pool(urls: tuple[str, ...], **overrides: Any) -> BindPool:
    return BindPool(urls, **(SETTINGS | overrides))


def _searches(urls: tuple[str, ...], service: tuple[str, bytes] | None = None) -> SearchPool:
    return SearchPool(urls, service=service, **SETTINGS)


def _ldap3result(url: str, dn: str, password: str) -> dict[str, Any]:
    conn = ldap3.Connection(
        ldap3.Server(url, get_info=ldap3.NONE), dn, password, raise_exceptions=False
    )
    conn.open(read_server_info=False)
    conn.bind(read_server_info=False, controls=[ppolicy.request_control()])
    result = dict(conn.result or {})
    conn.unbind()
    return result


@pytest.fixture(scope="module")
def own_slapd() -> Iterator[Slapd]:
    """A slapd of its own: these tests send wrong passwords, which slapd counts."""
    with Slapd(users=[DirectoryUser(uid=uid, password=pw) for uid, pw in POOL_USERS.items()]) as s:
        yield s


class TestAgainstSlapd:
    """What the pool makes of slapd's answers is what ldap3 makes of them."""

    @pytest.mark.parametrize("which", ["right", "wrong"])
    async def test_same_result_as_ldap3(self, own_slapd: Slapd, which: str) -> None:
        """Result code, message and the password policy control, as ``Connection.bind``."""
        dn = own_slapd.user_dn("alice")
        password = POOL_USERS["alice"] if which == "right" else secret("not-alices-password")
        pool = _pool((own_slapd.url,))
        try:
            ours = await pool.bind(dn, password.encode(), (PPOLICY_CONTROL,))
        finally:
            pool.close()
        theirs = _ldap3result(own_slapd.url, dn, password)
        for key in ("result", "description", "message", "dn", "controls"):
            assert ours.get(key) == theirs.get(key), key

    async def test_connections_reused_and_bounded(self, own_slapd: Slapd) -> None:
        """Forty binds, eight at a time, on at most four connections, opened once each."""
        pool = _pool((own_slapd.url,), size=4)
        opened = 0
        dial = pool._dial

        async def counting(url: str) -> Any:
            nonlocal opened
            opened += 1
            return await dial(url)

        pool._dial = counting  # type: ignore[method-assign]
        dn = own_slapd.user_dn("alice")
        try:
            results = await asyncio.gather(
                *(pool.bind(dn, POOL_USERS["alice"].encode(), ()) for _ in range(40))
            )
        finally:
            pool.close()
        assert [r["result"] for r in results] == [0] * 40
        assert opened <= 4

    async def test_restarted_directory(self) -> None:
        """Connections a restarted directory closed while idle are replaced, not failed."""
        dora = secret("Dora-pw-1")
        with Slapd(users=[DirectoryUser(uid="dora", password=dora)]) as own:
            pool = _pool((own.url,))
            dn = own.user_dn("dora")
            try:
                assert (await pool.bind(dn, dora.encode(), ()))["result"] == 0
                own.pause()
                own.resume()  # The same port; the pool's connection was closed while idle.
                await asyncio.sleep(0.1)
                assert (await pool.bind(dn, dora.encode(), ()))["result"] == 0
            finally:
                pool.close()

    async def test_nothing_listening(self) -> None:
        """No server: DirectoryUnavailable at once, and the server skipped for a while."""
        url = f"ldap://127.0.0.1:{free_port()}"
        now = [100.0]
        pool = _pool((url,), clock=lambda: now[0])
        with pytest.raises(DirectoryUnavailable, match="could not reach"):
            await pool.bind("cn=x", b"pw", ())
        with pytest.raises(DirectoryUnavailable, match="failed lately"):
            await pool.bind("cn=x", b"pw", ())
        now[0] += 11
        with pytest.raises(DirectoryUnavailable, match="could not reach"):
            await pool.bind("cn=x", b"pw", ())

    async def test_next_server_when_first_is_down(self, own_slapd: Slapd) -> None:
        """URLs in order: a dead first server costs a failed dial, not the sign-in."""
        pool = _pool((f"ldap://127.0.0.1:{free_port()}", own_slapd.url))
        try:
            result = await pool.bind(own_slapd.user_dn("alice"), POOL_USERS["alice"].encode(), ())
        finally:
            pool.close()
        assert result["result"] == 0


class TestSearch:
    """Finding users: the DNs and result code ldap3's search would give, on the event loop."""

    async def test_found_missing_and_too_many(self, own_slapd: Slapd) -> None:
        """One entry; none; two with sizeLimitExceeded; a base that does not exist."""
        pool = _searches((own_slapd.url,))
        base = own_slapd.base_dn
        try:
            assert await pool.find(base, "uid", "alice", size_limit=2) == (
                0,
                [own_slapd.user_dn("alice")],
            )
            assert await pool.find(base, "uid", "nobody", size_limit=2) == (0, [])
            code, dns = await pool.find(base, "objectClass", "inetOrgPerson", size_limit=1)
            assert (code, len(dns)) == (4, 1)  # sizeLimitExceeded, after one entry
            code, dns = await pool.find(base, "objectClass", "inetOrgPerson", size_limit=2)
            assert (code, len(dns)) == (0, 2)
            assert await pool.find("dc=elsewhere,dc=org", "uid", "alice", size_limit=2) == (32, [])
        finally:
            pool.close()

    @pytest.mark.parametrize("value", ["*", "alice)(uid=*", "a*", "\\2a", "alice\x00"])
    async def test_filter_syntax_is_just_text(self, own_slapd: Slapd, value: str) -> None:
        """What would be filter syntax in a filter string matches only itself: nothing here."""
        pool = _searches((own_slapd.url,))
        try:
            assert await pool.find(own_slapd.base_dn, "uid", value, size_limit=2) == (0, [])
        finally:
            pool.close()

    async def test_service_account(self, own_slapd: Slapd) -> None:
        """Connections bind as the service account first; a refused one says so, no search."""
        right = _searches((own_slapd.url,), (own_slapd.user_dn("bob"), POOL_USERS["bob"].encode()))
        wrong = _searches((own_slapd.url,), (own_slapd.user_dn("bob"), b"not-bobs"))
        try:
            assert (await right.find(own_slapd.base_dn, "uid", "alice", size_limit=2))[1]
            with pytest.raises(DirectoryUnavailable, match="service bind failed: invalidCred"):
                await wrong.find(own_slapd.base_dn, "uid", "alice", size_limit=2)
            assert wrong._idle == []  # A connection whose service bind failed is not kept.
        finally:
            right.close()
            wrong.close()


class TestConnectionEdges:
    """Every password is sent at most once, whatever the connection does."""

    @pytest.mark.parametrize("kind", ["search", "bind"])
    async def test_closed_with_the_request_on_the_wire(self, kind: str) -> None:
        """A reused connection closes on the second request: a search goes again, a bind not."""
        requests: dict[int, int] = {}

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            requests[id(writer)] = requests.get(id(writer), 0) + 1
            if requests[id(writer)] == 2:
                writer.close()
            else:
                writer.write(search_done(message_id) if kind == "search" else success(message_id))

        scripted = Scripted(answer)
        async with scripted as url:
            if kind == "search":
                searches = _searches((url,))
                assert await searches.find("dc=x", "uid", "a", size_limit=2) == (0, [])
                assert await searches.find("dc=x", "uid", "a", size_limit=2) == (0, [])
                searches.close()
                assert (scripted.requests, scripted.connections) == (3, 2)
            else:
                pool = _pool((url,))
                assert (await pool.bind("cn=a", b"pw", ()))["result"] == 0
                with pytest.raises(DirectoryUnavailable, match="closed"):
                    await pool.bind("cn=a", b"pw", ())
                pool.close()
                assert (scripted.requests, scripted.connections) == (2, 1)

    async def test_stray_bytes_while_idle(self) -> None:
        """Part of a message arriving between requests: the connection is not used again."""

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(success(message_id) + b"\x30\x0c\x02")

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,))
            assert (await pool.bind("cn=a", b"pw", ()))["result"] == 0
            assert pool._idle == []
            assert (await pool.bind("cn=a", b"pw", ()))["result"] == 0
            pool.close()
        assert (scripted.requests, scripted.connections) == (2, 2)

    async def test_notice_while_idle(self) -> None:
        """A notice of disconnection between binds: the next bind opens a fresh connection."""

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(success(message_id))
            await asyncio.sleep(0.05)
            writer.write(notice())
            writer.close()

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,))
            assert (await pool.bind("cn=a", b"pw", ()))["result"] == 0
            await asyncio.sleep(0.2)
            assert (await pool.bind("cn=a", b"pw", ()))["result"] == 0
            pool.close()
        assert (scripted.requests, scripted.connections) == (2, 2)

    async def test_answer_with_notice(self) -> None:
        """An answer and a notice in one segment: the answer stands, the connection goes."""

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(success(message_id) + notice())

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,))
            assert (await pool.bind("cn=a", b"pw", ()))["result"] == 0
            assert (await pool.bind("cn=a", b"pw", ()))["result"] == 0
            pool.close()
        assert (scripted.requests, scripted.connections) == (2, 2)

    async def test_notice_instead_of_answer(self) -> None:
        """The connection closes with the bind on the wire: unavailable, never sent again."""

        async def answer(_message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(notice())
            writer.close()

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,))
            with pytest.raises(DirectoryUnavailable, match="closed"):
                await pool.bind("cn=a", b"pw", ())
            pool.close()
        assert scripted.requests == 1

    async def test_silence_times_out_once(self) -> None:
        """No answer: unavailable after the receive timeout; the request went out once."""

        async def answer(_message_id: int, _writer: asyncio.StreamWriter) -> None:
            return

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,), receive_timeout=0.3)
            with pytest.raises(DirectoryUnavailable, match="in time"):
                await pool.bind("cn=a", b"pw", ())
            assert pool._idle == []  # A late answer must never meet the next request.
            pool.close()
        assert scripted.requests == 1

    async def test_cancelled_bind_drops_its_connection(self) -> None:
        """A bind cancelled while waiting leaves no connection with an answer pending."""

        async def answer(_message_id: int, _writer: asyncio.StreamWriter) -> None:
            return

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,))
            task = asyncio.create_task(pool.bind("cn=a", b"pw", ()))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool._idle == []
            pool.close()

    async def test_garbage_is_not_an_answer(self) -> None:
        """Bytes that are not LDAP: unavailable, the connection closed."""

        async def answer(_message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,))
            with pytest.raises(DirectoryUnavailable):
                await pool.bind("cn=a", b"pw", ())
            assert pool._idle == []
            pool.close()

    async def test_oversized_answer(self) -> None:
        """A length far beyond any bind response is refused before it is buffered."""

        async def answer(_message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(b"\x30\x84\x7f\xff\xff\xff")

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,))
            with pytest.raises(DirectoryUnavailable):
                await pool.bind("cn=a", b"pw", ())
            pool.close()

    async def test_answer_too_large_in_all(self) -> None:
        """Entries that are each allowed but together too large: refused before decoding them.

        ldap3's decoder makes ≈ 45 MB of tuples of a mebibyte of small elements, on the event
        loop: 64 such entries were 2.8 GB and 30 s of a starved event loop.
        """
        chunk = 400 * 1024

        def entry(message_id: int, number: int) -> bytes:
            dn = ldapwire._tlv(0x04, f"cn={number}".encode())
            attributes = ldapwire._tlv(0x30, ldapwire._tlv(0x04, b"x" * chunk))
            body = ldapwire._integer(message_id) + ldapwire._tlv(0x64, dn + attributes)
            return ldapwire._tlv(0x30, body)

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            for number in range(3):
                writer.write(entry(message_id, number))
            writer.write(result(message_id, 0x65, 0))
            await writer.drain()

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _searches((url,))
            with pytest.raises(DirectoryUnavailable):
                await pool.find("dc=x", "uid", "a", size_limit=2)
            pool.close()


@pytest.fixture(scope="module")
def pool_dc() -> Iterator[SambaDC]:
    """A Samba AD DC with one user, for TLS."""
    reason = samba_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with SambaDC(users=[AdUser(sam="pooluser", password=AD_PASSWORD)]) as dc:
        yield dc


@pytest.fixture
def ad_binds(pool_dc: SambaDC) -> tuple[SambaDC, str]:
    """The DN of the DC's user (found with ldap3, as the agent's search would)."""
    tls = ldap3.Tls(ca_certs_file=str(pool_dc.ca_file), validate=ssl.CERT_REQUIRED)
    conn = ldap3.Connection(
        ldap3.Server(pool_dc.ldaps_url, get_info=ldap3.NONE, tls=tls),
        pool_dc.admin_dn,
        pool_dc.admin_password,
        auto_bind=True,
    )
    conn.search(pool_dc.base_dn, "(sAMAccountName=pooluser)", attributes=[])
    dn = str((conn.response or [{}])[0]["dn"])
    conn.unbind()
    return pool_dc, dn


class TestTls:
    """LDAPS and StartTLS against Active Directory, verified by CA and by name."""

    async def test_ldaps(self, ad_binds: tuple[SambaDC, str]) -> None:
        """Right and wrong passwords over LDAPS; AD's subcode comes through."""
        dc, dn = ad_binds
        pool = _pool((dc.ldaps_url,), tls=tls_context(str(dc.ca_file)))
        try:
            assert (await pool.bind(dn, AD_PASSWORD.encode(), ()))["result"] == 0
            wrong = await pool.bind(dn, b"not-the-password", ())
        finally:
            pool.close()
        assert wrong["result"] == 49
        assert "data 52e" in wrong["message"]

    async def test_start_tls(self, ad_binds: tuple[SambaDC, str]) -> None:
        """ldap:// upgraded before the first bind (AD refuses simple binds in the clear)."""
        dc, dn = ad_binds
        pool = _pool((dc.ldap_url,), tls=tls_context(str(dc.ca_file)), start_tls=True)
        try:
            assert (await pool.bind(dn, AD_PASSWORD.encode(), ()))["result"] == 0
        finally:
            pool.close()

    async def test_unknown_ca_refused(self, ad_binds: tuple[SambaDC, str]) -> None:
        """A DC whose certificate the system's CAs do not vouch for: never bound to."""
        dc, dn = ad_binds
        for url, start_tls in ((dc.ldaps_url, False), (dc.ldap_url, True)):
            pool = _pool((url,), start_tls=start_tls)
            with pytest.raises(DirectoryUnavailable):
                await pool.bind(dn, AD_PASSWORD.encode(), ())
            pool.close()

    async def test_wrong_name_refused(self, ad_binds: tuple[SambaDC, str]) -> None:
        """Right CA, wrong name (``localhost`` is not in the DC's certificate): refused."""
        dc, dn = ad_binds
        url = dc.ldaps_url.replace("127.0.0.1", "localhost")
        pool = _pool((url,), tls=tls_context(str(dc.ca_file)))
        with pytest.raises(DirectoryUnavailable):
            await pool.bind(dn, AD_PASSWORD.encode(), ())
        pool.close()


#: A bind success for message 2 (the first request after StartTLS), one byte short: the first
#: byte of the directory's real answer over TLS (always 0x30) completes it, as the value of a
#: fourth element of the message, which ldap3's fast decoder reads past.
_FORGED_PREFIX = (
    b"\x30\x11\x02\x01\x02" + b"\x61\x07\x0a\x01\x00\x04\x00\x04\x00" + b"\x04\x00" + b"\x04\x01"
)


class TestStartTlsInjection:
    """Bytes sent in the clear after the StartTLS answer are no part of any answer over TLS."""

    @pytest.mark.parametrize(
        "injected", [_FORGED_PREFIX, success(2), b"\x30"], ids=["partial", "whole", "one-byte"]
    )
    async def test_cleartext_before_handshake_refused(
        self, tmp_path: Path, injected: bytes
    ) -> None:
        """A directory (or anyone on the path) adding bytes to the StartTLS answer: refused.

        The real directory behind the TLS answers invalidCredentials; the sign-in must never
        see a success, and no password goes over a connection whose stream was tampered with.
        """
        write_tls(tmp_path, "dc.example")
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        binds: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                request = await reader.read(4096)  # StartTLS
                writer.write(result(request[4], 0x78, 0) + injected)
                await writer.drain()
                await writer.start_tls(server_tls)
                bind = await reader.read(4096)
                if bind:
                    binds.append(bind)
                    writer.write(result(bind[4], 0x61, 49))  # invalidCredentials
                    await writer.drain()
                await reader.read(4096)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = _pool(
            (f"ldap://127.0.0.1:{port}",),
            tls=tls_context(str(tmp_path / "ca.pem")),
            start_tls=True,
        )
        result: dict[str, Any] | None = None
        try:
            with contextlib.suppress(DirectoryUnavailable):
                result = await pool.bind("cn=victim", b"a-wrong-password", ())
        finally:
            pool.close()
            server.close()
        assert result is None or result["result"] != 0, "a forged success was believed"
        assert result is None, "the password went over a tampered connection"
        assert binds == []

    async def test_unreadable_start_tls_answer(self) -> None:
        """An extended response with no result code: unavailable, not an internal error."""

        async def answer(message_id: int, writer: asyncio.StreamWriter) -> None:
            writer.write(b"\x30\x05\x02\x01" + bytes((message_id,)) + b"\x78\x00")

        scripted = Scripted(answer)
        async with scripted as url:
            pool = _pool((url,), start_tls=True)
            with pytest.raises(DirectoryUnavailable):
                await pool.bind("cn=a", b"pw", ())
            pool.close()
        assert scripted.requests == 1
