"""The broker's certificate authority: its own key, its server certificate, agent certificates.

Agents trust the broker by this CA (pinned in their enrolment token) and the broker trusts
agents by the certificates it signs here. Every agent certificate names its tenant and agent id
in a URI SAN, which the broker checks on every Connect.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID

from pta import tls
from pta.errors import InvalidRequest

if TYPE_CHECKING:
    from pathlib import Path

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
CA_LIFETIME = datetime.timedelta(days=3650)
DEFAULT_SERVER_LIFETIME = datetime.timedelta(days=90)
#: Clocks differ a little: certificates start being valid slightly in the past (by at most a
#: tenth of their life, so that short test lifetimes stay meaningful).
BACKDATE = datetime.timedelta(minutes=5)
MAX_CSR_BYTES = 8192
DEFAULT_SANS = ("localhost", "127.0.0.1")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for item in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            entries.append(x509.DNSName(item))
    return x509.SubjectAlternativeName(entries)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The broker's TLS key and chain (leaf then CA), ready for grpc."""

    key_pem: bytes
    chain_pem: bytes
    certificate: x509.Certificate


class CertificateAuthority:
    """Issues the broker's server certificate and its agents' client certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        """Wrap an existing CA key and certificate."""
        self.key = key
        self.cert = cert
        self.cert_pem = tls.cert_pem(cert)
        self.fingerprint = tls.fingerprint(cert)

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` that only holders of this CA's key can derive.

        HKDF-SHA256 over the CA's private scalar, the purpose as its info: brokers of one
        cluster (which share the CA key) derive the same key, e.g. to seal what they share in
        the store, and nobody who holds only the store can.
        """
        secret = self.key.private_numbers().private_value.to_bytes(66, "big")
        info = b"pta-ca-derived-v1\0" + purpose.encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> CertificateAuthority:
        """Load the CA from ``data_dir``, creating it on first start."""
        cert_path, key_path = data_dir / CA_CERT_FILE, data_dir / CA_KEY_FILE
        if cert_path.exists() and key_path.exists():
            return cls(tls.load_key(key_path.read_bytes()), tls.load_cert(cert_path.read_bytes()))
        key = tls.new_private_key()
        subject = tls.name("pta broker CA")
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        tls.write_private(key_path, tls.key_pem(key))
        tls.write_public(cert_path, tls.cert_pem(cert))
        return cls(key, cert)

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed ``cert``: by signature, since every pta CA has the same name."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        san: x509.SubjectAlternativeName,
        usage: list[x509.ObjectIdentifier],
        lifetime: datetime.timedelta,
    ) -> x509.Certificate:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(tls.name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - min(BACKDATE, lifetime / 10))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def server_identity(
        self,
        data_dir: Path,
        sans: tuple[str, ...],
        lifetime: datetime.timedelta = DEFAULT_SERVER_LIFETIME,
        *,
        force: bool = False,
    ) -> ServerIdentity:
        """Load the broker's server certificate, (re)issuing it when missing or due.

        It is reissued when the names asked for changed, its renewal time has come, or
        ``force`` says so.
        """
        names = tuple(dict.fromkeys((*DEFAULT_SANS, *sans)))
        cert_path, key_path = data_dir / SERVER_CERT_FILE, data_dir / SERVER_KEY_FILE
        if not force and cert_path.exists() and key_path.exists():
            cert = tls.load_cert(cert_path.read_bytes())
            if (
                _san(names)
                == cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                and _now() < tls.renewal_due(cert)
                and self.issued(cert)
            ):
                key_pem = key_path.read_bytes()
                return ServerIdentity(key_pem, tls.cert_pem(cert) + self.cert_pem, cert)
        key = tls.new_private_key()
        cert = self._leaf(
            key.public_key(),
            names[0],
            _san(names),
            [ExtendedKeyUsageOID.SERVER_AUTH],
            lifetime,
        )
        tls.write_private(key_path, tls.key_pem(key))
        tls.write_public(cert_path, tls.cert_pem(cert))
        return ServerIdentity(tls.key_pem(key), tls.cert_pem(cert) + self.cert_pem, cert)

    def sign_agent(
        self, csr_pem: str, *, tenant: str, agent_id: str, lifetime: datetime.timedelta
    ) -> x509.Certificate:
        """Sign an agent's CSR, naming its tenant and id; only the CSR's key is taken from it.

        Raises:
            InvalidRequest: When the CSR is oversized, malformed, not self-signed or not P-256.
        """
        if len(csr_pem) > MAX_CSR_BYTES:
            raise InvalidRequest("certificate signing request too large")
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as error:
            raise InvalidRequest("malformed certificate signing request") from error
        if not csr.is_signature_valid:
            raise InvalidRequest("certificate signing request signature does not verify")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise InvalidRequest("agent keys must be ECDSA P-256")
        san = x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(tls.agent_uri(tenant, agent_id))]
        )
        return self._leaf(key, agent_id, san, [ExtendedKeyUsageOID.CLIENT_AUTH], lifetime)

    def sign_administrator(
        self, public_key: ec.EllipticCurvePublicKey, *, uri: str, lifetime: datetime.timedelta
    ) -> x509.Certificate:
        """An administrator's client certificate: the only place an admin URI is ever written.

        See :mod:`broker.trust.administrators`: the ``spiffe://pta/admin/NAME`` URI is the
        role; called on the CA's machine only, with a key made there.
        """
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        return self._leaf(
            public_key,
            uri.rpartition("/")[2],
            san,
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            lifetime,
        )
