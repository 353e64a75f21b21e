"""``pta/tls.py``: certificates, names and files, and TLS as grpc really speaks it.

The network parts run against a real ``grpc.aio`` server on loopback with certificates from
the broker's own CA: the chain an enrolling agent fetches, a server that wants a client
certificate, and the client certificate a handler sees on a mutual TLS call.
"""

from __future__ import annotations

import asyncio
import datetime
import stat
from typing import TYPE_CHECKING

import grpc
import pytest
from cryptography import x509

from broker.trust.ca import CertificateAuthority, ServerIdentity
from pta import tls

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

DAY = datetime.timedelta(days=1)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    """The broker's CA, in ``tmp_path``."""
    return CertificateAuthority.load_or_create(tmp_path)


@pytest.fixture
def server_identity(ca: CertificateAuthority, tmp_path: Path) -> ServerIdentity:
    """A server certificate for localhost and 127.0.0.1."""
    return ca.server_identity(tmp_path, ())


def agent_credentials(ca: CertificateAuthority) -> tuple[bytes, bytes, x509.Certificate]:
    """(key PEM, chain PEM, certificate) of an agent of acme, issued by ``ca``."""
    key = tls.new_private_key()
    cert = ca.sign_agent(
        tls.make_csr(key, "agent-1").decode(), tenant="acme", agent_id="agent-1", lifetime=DAY
    )
    return tls.key_pem(key), tls.cert_pem(cert) + ca.cert_pem, cert


class Server:
    """A real TLS grpc server with one method that reports the caller's certificate."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.seen: list[x509.Certificate | None] = []
        self.port = 0

    async def handle(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        """Remember the verified client certificate (or None), answer the request."""
        self.seen.append(tls.peer_certificate(context.auth_context()))
        return request


@pytest.fixture(params=[False, True], ids=["tls", "mtls"])
async def server(
    request: pytest.FixtureRequest, ca: CertificateAuthority, server_identity: ServerIdentity
) -> AsyncIterator[tuple[Server, bool]]:
    """A TLS server; with ``mtls`` it requires a client certificate from the CA."""
    mutual: bool = request.param
    state = Server()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Tls", {"Call": grpc.unary_unary_rpc_method_handler(state.handle)}
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [(server_identity.key_pem, server_identity.chain_pem)],
        root_certificates=ca.cert_pem if mutual else None,
        require_client_auth=mutual,
    )
    state.port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield state, mutual
    finally:
        await server.stop(None)


class TestCertificates:
    """Pure helpers over certificates."""

    def test_renewal_is_due_two_thirds_in(self, ca: CertificateAuthority) -> None:
        """Two thirds into the validity, leaving a third to retry a failed renewal."""
        _, _, cert = agent_credentials(ca)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        assert tls.renewal_due(cert) == start + (end - start) * 2 / 3

    def test_agent_identity_round_trip(self, ca: CertificateAuthority) -> None:
        """The URI SAN names tenant and agent; the serial is lower-case hex."""
        _, _, cert = agent_credentials(ca)
        assert tls.agent_uri("acme", "agent-1") == "spiffe://pta/tenant/acme/agent/agent-1"
        assert tls.agent_identity(cert) == ("acme", "agent-1")
        assert tls.serial_hex(cert) == f"{cert.serial_number:x}"
        assert tls.fingerprint(cert) == tls.fingerprint(tls.load_cert(tls.cert_pem(cert)))

    @pytest.mark.parametrize(
        "uri",
        [
            "spiffe://other/tenant/acme/agent/agent-1",
            "spiffe://pta/tenant/acme",
            "spiffe://pta/tenant//agent/agent-1",
            "spiffe://pta/tenant/acme/agent/",
            "spiffe://pta/tenant/acme/agent/a/b",
        ],
    )
    def test_other_uris_name_no_agent(self, ca: CertificateAuthority, uri: str) -> None:
        """A certificate whose URI is not exactly an agent's names no one."""
        key = tls.new_private_key()
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        # The CA itself never issues these; a forger with its key might.
        cert = ca._leaf(key.public_key(), "x", san, [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH], DAY)
        assert tls.agent_identity(cert) is None

    def test_server_certificate_names_no_agent(self, server_identity: ServerIdentity) -> None:
        """DNS names only: no agent identity."""
        assert tls.agent_identity(server_identity.certificate) is None


class TestFiles:
    """Secrets 0600 from their first byte; files replaced whole."""

    def test_private_file_replaces_a_readable_one(self, tmp_path: Path) -> None:
        """An existing world-readable file becomes a 0600 file with the new content."""
        path = tmp_path / "agent.key"
        path.write_bytes(b"old")
        path.chmod(0o644)
        tls.write_private(path, b"new")
        assert path.read_bytes() == b"new"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.key"]

    def test_public_file(self, tmp_path: Path) -> None:
        """Certificates are 0644, written whole."""
        path = tmp_path / "agent.pem"
        tls.write_public(path, b"cert")
        assert path.read_bytes() == b"cert"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pem"]


class TestOverTheWire:
    """Against a real TLS grpc server."""

    async def test_fetch_server_chain(
        self, server: tuple[Server, bool], ca: CertificateAuthority, server_identity: ServerIdentity
    ) -> None:
        """Leaf then CA, unverified; a server that wants a client certificate says so."""
        state, mutual = server
        fetch = asyncio.to_thread(tls.fetch_server_chain, "127.0.0.1", state.port, 5.0)
        if mutual:
            with pytest.raises(tls.ClientCertificateRequired):
                await fetch
            return
        chain = await fetch
        assert chain == [server_identity.certificate, ca.cert]

    async def test_peer_certificate(
        self, server: tuple[Server, bool], ca: CertificateAuthority
    ) -> None:
        """A verified client certificate reaches the handler; none, None (or no call at all)."""
        state, mutual = server
        key, chain, cert = agent_credentials(ca)
        target = f"localhost:{state.port}"
        async with grpc.aio.secure_channel(
            target, tls.channel_credentials(ca.cert_pem, key, chain)
        ) as channel:
            mutual_call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/test.Tls/Call"
            )
            assert await mutual_call(b"hi", timeout=5) == b"hi"
        async with grpc.aio.secure_channel(target, tls.channel_credentials(ca.cert_pem)) as bare:
            method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = bare.unary_unary(
                "/test.Tls/Call"
            )
            call = method(b"hi", timeout=5)
            if mutual:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            else:
                assert await call == b"hi"
        # A server that asks for no client certificate is shown none, even when one is offered.
        assert state.seen == ([cert] if mutual else [None, None])
