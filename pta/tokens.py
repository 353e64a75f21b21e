"""One-time enrolment tokens: ``pta1.<id>.<secret>.<ca-sha256>``.

The last part pins the broker's CA certificate, as kubeadm join tokens do, so an agent can
trust the broker without a separate CA file and without trusting on first use. The broker
keeps only the SHA-256 of the secret: a leaked store cannot enrol anybody.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from pta.errors import Unauthenticated

PREFIX = "pta1"
_TOKEN = re.compile(r"^pta1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})\.([0-9a-f]{64})$")
#: What a token's id looks like (its public part, as ``token list`` shows it).
TOKEN_ID = re.compile(r"[0-9a-f]{16}")
MAX_TOKEN_CHARS = 256


@dataclass(frozen=True, slots=True)
class EnrolmentToken:
    """A parsed token; the secret stays out of ``repr``."""

    token_id: str
    secret: str = field(repr=False)
    ca_sha256: str

    def __str__(self) -> str:
        """Render the token for the operator to hand to an agent."""
        return f"{PREFIX}.{self.token_id}.{self.secret}.{self.ca_sha256}"

    @property
    def secret_hash(self) -> bytes:
        """What the broker stores instead of the secret."""
        return hash_secret(self.secret)

    def matches(self, stored_hash: bytes) -> bool:
        """Compare in constant time with a stored hash."""
        return hmac.compare_digest(self.secret_hash, stored_hash)


def new_token(ca_sha256: str) -> EnrolmentToken:
    """Make a fresh token for the CA with this fingerprint."""
    return EnrolmentToken(secrets.token_hex(8), secrets.token_urlsafe(32), ca_sha256)


def hash_secret(secret: str) -> bytes:
    """Hash a token secret; 256 random bits need no slow hash."""
    return hashlib.sha256(secret.encode()).digest()


def parse_token(text: str) -> EnrolmentToken:
    """Parse a token as typed or pasted by an operator.

    Raises:
        Unauthenticated: When it is not a well-formed token (the message never echoes it).
    """
    match = _TOKEN.match(text.strip()) if len(text) <= MAX_TOKEN_CHARS else None
    if match is None:
        raise Unauthenticated("malformed enrolment token: expected pta1.<id>.<secret>.<ca-sha256>")
    return EnrolmentToken(match[1], match[2], match[3])
