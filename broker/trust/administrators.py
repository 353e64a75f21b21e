"""Administrator certificates: who may call the AdminService, and how the broker knows them.

An administrator holds a client certificate from the broker's CA, like an agent, and the agent
endpoint's handshake checks that much (no certificate, or a foreign CA's, never reaches a
handler). What makes it an administrator's is a role agent certificates can never carry, in
two places that must agree. In the certificate: its SPIFFE ID, the URI SAN
``spiffe://pta/admin/NAME`` (an agent's is ``spiffe://pta/tenant/T/agent/A``), which the CA
writes only in :meth:`~broker.trust.ca.CertificateAuthority.sign_administrator`, called only
by ``pta-broker admin issue`` on the CA's own machine; ``sign_agent`` takes nothing but the
key from an agent's request and always writes an agent's URI. In the store: the
certificate's serial in the administrators table, which only ``admin issue`` writes (an
agent's serial is in the agents' certificates). Each admin call looks the serial up there:
revoking a name (``pta-broker admin revoke``) refuses its next call at every broker of the
store. (An extended key usage of pta's own was tried as a third mark: an OID from a UUID,
under ``2.25``, is too large for Go's ASN.1 parser, so grpcurl could not load the
certificate; and pta has no enterprise number.)
"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING

from cryptography import x509

from pta import tls
from pta.errors import InvalidRequest, PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from broker.store.protocols import AdministratorStore
    from broker.store.records import AdministratorRecord
    from broker.trust.ca import CertificateAuthority

ADMIN_URI_PREFIX = "spiffe://pta/admin/"
#: Names appear in certificates and in every audit line: kept to a plain, bounded form.
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
DEFAULT_LIFETIME = datetime.timedelta(days=90)
#: The files ``admin issue`` writes into its directory, and ``--admin-cert DIR`` reads.
KEY_FILE, CERT_FILE, CA_FILE = "admin.key", "admin.pem", "ca.pem"


def check_name(name: str) -> str:
    """An administrator's name as it may be used.

    Raises:
        InvalidRequest: Not 1-63 of lower-case letters, digits, dot, underscore, hyphen.
    """
    if not NAME.fullmatch(name):
        raise InvalidRequest(
            "an administrator's name is 1 to 63 lower-case letters, digits, '.', '_' or '-'"
            " (starting with a letter or digit)"
        )
    return name


def issue(
    ca: CertificateAuthority,
    store: AdministratorStore,
    name: str,
    out: Path,
    lifetime: datetime.timedelta = DEFAULT_LIFETIME,
) -> x509.Certificate:
    """Make an administrator's key and certificate in ``out`` (key 0600), and record it.

    ``out`` gets the key, the certificate and the CA's certificate (to verify the broker by).

    Raises:
        InvalidRequest: A bad name, or ``out`` already holds an administrator's key.
    """
    check_name(name)
    if (out / KEY_FILE).exists():
        raise InvalidRequest(f"{out / KEY_FILE} exists: an administrator's key is never replaced")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = tls.new_private_key()
    cert = ca.sign_administrator(key.public_key(), uri=ADMIN_URI_PREFIX + name, lifetime=lifetime)
    store.add(
        name=name, serial=tls.serial_hex(cert), not_after=cert.not_valid_after_utc.timestamp()
    )
    tls.write_private(out / KEY_FILE, tls.key_pem(key))
    tls.write_public(out / CERT_FILE, tls.cert_pem(cert))
    tls.write_public(out / CA_FILE, ca.cert_pem)
    return cert


def name_of(cert: x509.Certificate) -> str | None:
    """The administrator a certificate names, if it carries the role; else None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(ADMIN_URI_PREFIX) and NAME.fullmatch(
            name := uri[len(ADMIN_URI_PREFIX) :]
        ):
            return name
    return None


def authenticate(
    store: AdministratorStore, auth_context: Mapping[str, Iterable[bytes]]
) -> AdministratorRecord:
    """The administrator calling, from its TLS client certificate and the store, now.

    Raises:
        Unauthenticated: No certificate, or one not recorded, revoked or expired.
        PermissionDenied: A certificate of the CA without the administrator role (an agent's).
    """
    cert = tls.peer_certificate(auth_context)
    if cert is None:
        raise Unauthenticated("the AdminService needs an administrator's client certificate")
    name = name_of(cert)
    if name is None:
        raise PermissionDenied(
            "this certificate does not carry the administrator role: use one made by"
            " `pta-broker admin issue`"
        )
    record = store.certificate(tls.serial_hex(cert))
    if record is None or record.name != name:
        raise Unauthenticated("this administrator certificate is not known to this store")
    now = datetime.datetime.now(datetime.UTC).timestamp()
    if reason := record.refusal(now):
        raise Unauthenticated(reason)
    return record
