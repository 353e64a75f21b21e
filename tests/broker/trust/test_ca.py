"""``broker/trust/ca.py``: the CA the broker issues every certificate from, on real files and keys.

What the rest of pta relies on: the CA survives a restart unchanged (tokens pin its hash), its
key is private from the first byte, the server certificate is reissued only when it must be,
and an agent certificate takes nothing from the CSR but its key.
"""

from __future__ import annotations

import datetime
import stat
import time
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.trust.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    MAX_CSR_BYTES,
    SERVER_CERT_FILE,
    SERVER_KEY_FILE,
    CertificateAuthority,
)
from pta import tls
from pta.errors import InvalidRequest

if TYPE_CHECKING:
    from pathlib import Path

DAY = datetime.timedelta(days=1)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    """A CA created in ``tmp_path``."""
    return CertificateAuthority.load_or_create(tmp_path)


def csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, common_name: str) -> str:
    """A signed CSR asking for ``common_name`` and a SAN of its own choosing."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("broker.example.com")]), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def issued_by(cert: x509.Certificate, ca: CertificateAuthority) -> bool:
    """Whether ``cert``'s signature verifies under the CA's key, and it names the CA."""
    cert.verify_directly_issued_by(ca.cert)
    return cert.issuer == ca.cert.subject


class TestAuthority:
    """Created once, then the same CA for the life of the data directory."""

    def test_created_once_and_reloaded_unchanged(self, tmp_path: Path) -> None:
        """A restart loads the same key and certificate: enrolment tokens keep pinning it."""
        first = CertificateAuthority.load_or_create(tmp_path)
        again = CertificateAuthority.load_or_create(tmp_path)
        assert again.fingerprint == first.fingerprint
        assert again.key.private_numbers() == first.key.private_numbers()
        assert first.fingerprint == tls.fingerprint(tls.load_cert(first.cert_pem))

    def test_key_private_certificate_public(self, tmp_path: Path) -> None:
        """The CA key is 0600, its certificate 0644."""
        CertificateAuthority.load_or_create(tmp_path)
        assert stat.S_IMODE((tmp_path / CA_KEY_FILE).stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / CA_CERT_FILE).stat().st_mode) == 0o644

    def test_a_ca_that_signs_certificates_only(self, ca: CertificateAuthority) -> None:
        """Self-signed, a CA with no intermediates below it, P-256, valid now."""
        assert issued_by(ca.cert, ca)
        constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert constraints.ca is True
        assert constraints.path_length == 0
        usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign
        assert not usage.digital_signature
        assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
        assert ca.key.curve.name == "secp256r1"
        now = datetime.datetime.now(datetime.UTC)
        assert ca.cert.not_valid_before_utc <= now < ca.cert.not_valid_after_utc


class TestServerIdentity:
    """The broker's own certificate: reissued when the names or the time call for it."""

    def test_issued_for_its_names_as_a_server(
        self, ca: CertificateAuthority, tmp_path: Path
    ) -> None:
        """Server auth, the default names plus the asked ones, the chain ends at the CA."""
        identity = ca.server_identity(tmp_path, ("broker.example.com",))
        cert = identity.certificate
        assert issued_by(cert, ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost", "broker.example.com"]
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
        assert identity.chain_pem == tls.cert_pem(cert) + ca.cert_pem
        assert stat.S_IMODE((tmp_path / SERVER_KEY_FILE).stat().st_mode) == 0o600

    def test_kept_while_nothing_changed(self, ca: CertificateAuthority, tmp_path: Path) -> None:
        """The same names again, before its renewal time: the same certificate and key."""
        first = ca.server_identity(tmp_path, ("broker.example.com",))
        again = ca.server_identity(tmp_path, ("broker.example.com",))
        assert again.certificate.serial_number == first.certificate.serial_number
        assert again.key_pem == first.key_pem

    def test_reissued_for_new_names_when_due_or_forced(
        self, ca: CertificateAuthority, tmp_path: Path
    ) -> None:
        """Other names, a certificate past two thirds of its life, or ``force``: a new one."""
        first = ca.server_identity(tmp_path, ("a.example.com",))
        renamed = ca.server_identity(tmp_path, ("b.example.com",))
        assert renamed.certificate.serial_number != first.certificate.serial_number
        forced = ca.server_identity(tmp_path, ("b.example.com",), force=True)
        assert forced.certificate.serial_number != renamed.certificate.serial_number
        short = ca.server_identity(
            tmp_path, ("b.example.com",), datetime.timedelta(seconds=2), force=True
        )
        assert ca.server_identity(tmp_path, ("b.example.com",)).certificate == short.certificate
        wait = tls.renewal_due(short.certificate) - datetime.datetime.now(datetime.UTC)
        time.sleep(max(wait.total_seconds(), 0) + 0.05)  # Two thirds of two seconds, at most.
        due = ca.server_identity(tmp_path, ("b.example.com",))
        assert due.certificate.serial_number != short.certificate.serial_number

    def test_a_certificate_from_another_ca_is_replaced(self, tmp_path: Path) -> None:
        """A data dir whose server certificate another CA issued gets one from this CA."""
        (tmp_path / "other").mkdir()
        (tmp_path / "ours").mkdir()
        other = CertificateAuthority.load_or_create(tmp_path / "other")
        other.server_identity(tmp_path, ())
        ours = CertificateAuthority.load_or_create(tmp_path / "ours")
        identity = ours.server_identity(tmp_path, ())
        assert issued_by(identity.certificate, ours)
        assert tls.load_cert((tmp_path / SERVER_CERT_FILE).read_bytes()) == identity.certificate


class TestSignAgent:
    """An agent certificate: the CSR's key, the CA's names, client auth only."""

    def test_takes_only_the_key_from_the_csr(self, ca: CertificateAuthority) -> None:
        """Names and SANs the CSR asks for are ignored; the URI names tenant and agent."""
        key = tls.new_private_key()
        cert = ca.sign_agent(
            csr_for(key, "broker.example.com"), tenant="acme", agent_id="agent-1", lifetime=DAY
        )
        assert issued_by(cert, ca)
        assert cert.public_key() == key.public_key()
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "agent-1"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == []
        assert tls.agent_identity(cert) == ("acme", "agent-1")
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert constraints.ca is False
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert DAY <= lifetime <= DAY + datetime.timedelta(minutes=5)

    @pytest.mark.parametrize(
        ("csr", "message"),
        [
            ("x" * (MAX_CSR_BYTES + 1), "too large"),
            ("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n", "malformed"),
        ],
        ids=["oversized", "malformed"],
    )
    def test_refuses_bad_csrs(self, ca: CertificateAuthority, csr: str, message: str) -> None:
        """Oversized or not a CSR: InvalidRequest, before any parsing of the rest."""
        with pytest.raises(InvalidRequest, match=message):
            ca.sign_agent(csr, tenant="acme", agent_id="agent-1", lifetime=DAY)

    def test_refuses_a_key_grpc_would_not_take(self, ca: CertificateAuthority) -> None:
        """RSA (and every curve but P-256): refused, agents use P-256 only."""
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(InvalidRequest, match="P-256"):
            ca.sign_agent(csr_for(rsa_key, "a"), tenant="acme", agent_id="a", lifetime=DAY)
        p384 = ec.generate_private_key(ec.SECP384R1())
        with pytest.raises(InvalidRequest, match="P-256"):
            ca.sign_agent(csr_for(p384, "a"), tenant="acme", agent_id="a", lifetime=DAY)

    def test_refuses_a_csr_whose_signature_fails(self, ca: CertificateAuthority) -> None:
        """A CSR with another key's signature (a tampered request) is refused."""
        good = csr_for(tls.new_private_key(), "agent-1").encode()
        der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
        tampered = bytearray(der)
        tampered[-8] ^= 0xFF  # Inside the signature.
        pem = x509.load_der_x509_csr(bytes(tampered)).public_bytes(serialization.Encoding.PEM)
        with pytest.raises(InvalidRequest, match="signature"):
            ca.sign_agent(pem.decode(), tenant="acme", agent_id="agent-1", lifetime=DAY)
