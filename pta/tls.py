"""Keys, certificates and gRPC credentials, shared by the broker's CA and the agent's enrolment.

TLS keys are ECDSA P-256: grpcio's handshake fails with Ed25519 certificates. Every private key
is written with :func:`write_private` (mode 0600 from the moment the file exists).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pta import keys

if TYPE_CHECKING:
    import datetime
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from cryptography.x509.oid import ObjectIdentifier

#: A certificate is renewed once this share of its validity has passed.
RENEW_AT = 2 / 3
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
#: The URI SAN of an agent certificate: both names are checked on every Connect.
AGENT_URI_PREFIX = "spiffe://pta/tenant/"


def renewal_due(cert: x509.Certificate) -> datetime.datetime:
    """Return when a certificate should be replaced: two thirds into its validity.

    Early enough that a failed renewal has a third of the lifetime left to be retried in.
    """
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_AT


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """Make a P-256 key, the curve every gRPC TLS stack accepts."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Serialise a TLS private key (:func:`pta.keys.private_pem`)."""
    return keys.private_pem(key)


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load a TLS private key (P-256).

    Raises:
        TypeError: When the PEM holds another kind of key.
    """
    key = keys.load_private(pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("expected an ECDSA private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    """Serialise a certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    """Load the first certificate of a PEM blob."""
    return x509.load_pem_x509_certificate(pem)


def fingerprint(cert: x509.Certificate) -> str:
    """Return the SHA-256 of the certificate's DER encoding, hex: what enrolment tokens pin."""
    return cert.fingerprint(hashes.SHA256()).hex()


def serial_hex(cert: x509.Certificate) -> str:
    """Return the serial number as lower-case hex, the form the store and logs use."""
    return f"{cert.serial_number:x}"


def agent_uri(tenant: str, agent_id: str) -> str:
    """Return the URI SAN that names an agent of a tenant."""
    return f"{AGENT_URI_PREFIX}{tenant}/agent/{agent_id}"


def agent_identity(cert: x509.Certificate) -> tuple[str, str] | None:
    """Return ``(tenant, agent_id)`` from an agent certificate's URI SAN, or None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(AGENT_URI_PREFIX):
            tenant, sep, agent_id = uri.removeprefix(AGENT_URI_PREFIX).partition("/agent/")
            if sep and tenant and agent_id and "/" not in agent_id:
                return tenant, agent_id
    return None


def name(common_name: str) -> x509.Name:
    """Build a subject made of one common name."""
    from cryptography.x509.oid import NameOID  # noqa: PLC0415 - keeps the module's imports short

    oid: ObjectIdentifier = NameOID.COMMON_NAME
    return x509.Name([x509.NameAttribute(oid, common_name)])


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """Make a PEM certificate signing request for ``key``."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(name(common_name))
    return csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, readable by the owner only from its first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (certificates, state) atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(PUBLIC_MODE)
    tmp.replace(path)


class ClientCertificateRequired(ConnectionError):
    """The server closed the connection after TLS: it wants a client certificate."""


def fetch_server_chain(host: str, port: int, timeout: float = 10.0) -> list[x509.Certificate]:
    """Return the certificates a TLS server presents, without trusting any of them yet.

    Enrolment uses this to find the CA certificate whose hash the token pins (as kubeadm join
    does): nothing but a TLS handshake is sent before the pin has been checked.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        # Public from Python 3.13; the same method on the C object since 3.10.
        getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]  # noqa: SLF001
        chain = getter()
        # A gRPC server speaks first (its HTTP/2 settings); one that wants a client certificate
        # (the broker's agent endpoint) closes the connection instead.
        tls.settimeout(min(timeout, 2.0))
        with contextlib.suppress(TimeoutError):
            if tls.recv(1) == b"":
                raise ClientCertificateRequired(f"{host}:{port} wants a client certificate")
    return [x509.load_der_x509_certificate(c.public_bytes(ssl._ssl.ENCODING_DER)) for c in chain]  # type: ignore[attr-defined]  # noqa: SLF001


def channel_credentials(
    ca: bytes, key: bytes | None = None, chain: bytes | None = None
) -> grpc.ChannelCredentials:
    """Build channel TLS credentials; with ``key`` and ``chain`` the channel is mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )


def peer_certificate(auth_context: Mapping[str, Iterable[bytes]]) -> x509.Certificate | None:
    """Return the verified client certificate of an RPC, or None when there is none."""
    pem = next(iter(auth_context.get("x509_pem_cert", ())), None)
    return None if pem is None else load_cert(pem)
