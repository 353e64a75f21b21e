"""HPKE (RFC 9180) envelopes that carry credentials from the broker to exactly one agent.

The suite is fixed (X25519, HKDF-SHA256, ChaCha20-Poly1305) and the construction is
``cryptography``'s own: nothing here is home-made crypto. What we add is the ``info`` binding:
tenant, agent, request id, domain and deadline are all part of the key schedule, so an
envelope moved to another agent, tenant or request, or kept past its deadline, will not open.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from pta import keys
from pta.errors import EnvelopeRejected

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
INFO_LABEL = b"pta.v1 credential envelope"
PUBLIC_KEY_BYTES = 32
#: An envelope holds at most a username and two passwords: anything larger is hostile.
MAX_ENVELOPE_BYTES = 4096
#: No name an envelope is bound to comes near this (domains stop at 253 characters).
MAX_FIELD_BYTES = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeContext:
    """Everything an envelope is bound to; both sides must build the same one."""

    tenant: str
    agent_id: str
    request_id: str
    domain: str
    deadline_unix_ms: int

    def info(self) -> bytes:
        """Encode the binding unambiguously: each field is length-prefixed.

        Raises:
            EnvelopeRejected: When a field is too long to be part of any real envelope.
        """
        parts = [INFO_LABEL]
        for text in (self.tenant, self.agent_id, self.request_id, self.domain):
            raw = text.encode()
            if len(raw) > MAX_FIELD_BYTES:
                raise EnvelopeRejected("envelope context field too long")
            parts.append(struct.pack(">H", len(raw)) + raw)
        parts.append(struct.pack(">q", self.deadline_unix_ms))
        return b"".join(parts)


def generate_key() -> x25519.X25519PrivateKey:
    """Make a new envelope key pair."""
    return x25519.X25519PrivateKey.generate()


def public_key_bytes(key: x25519.X25519PrivateKey) -> bytes:
    """Return the raw 32-byte public key, the form the contract carries."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(raw: bytes) -> x25519.X25519PublicKey:
    """Parse a raw public key from an enrolment request.

    Raises:
        ValueError: When it is not 32 bytes.
    """
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError("an envelope public key is 32 bytes")
    key = x25519.X25519PublicKey.from_public_bytes(raw)
    try:  # A low-order point (all zeros, say) would make every later seal fail.
        SUITE.encrypt(b"", key, info=INFO_LABEL)
    except ValueError:
        raise ValueError("not a usable X25519 public key") from None
    return key


def private_key_bytes(key: x25519.X25519PrivateKey) -> bytes:
    """Serialise the envelope key for the agent's 0600 state file (:mod:`pta.keys`)."""
    return keys.private_pem(key)


def load_private_key(pem: bytes) -> x25519.X25519PrivateKey:
    """Load the agent's envelope key from its state file.

    Raises:
        TypeError: When the file holds another kind of key.
    """
    key = keys.load_private(pem)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise TypeError("the envelope key file does not hold an X25519 key")
    return key


def seal(plaintext: bytes, public_key: x25519.X25519PublicKey, context: EnvelopeContext) -> bytes:
    """Seal ``plaintext`` so that only the holder of the key, in this context, can open it."""
    return SUITE.encrypt(plaintext, public_key, info=context.info())


def open_envelope(
    envelope: bytes, private_key: x25519.X25519PrivateKey, context: EnvelopeContext
) -> bytes:
    """Open an envelope sealed by :func:`seal` in the same context.

    Raises:
        EnvelopeRejected: When it is oversized, truncated, forged or bound to anything else.
    """
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise EnvelopeRejected("envelope too large")
    try:
        return SUITE.decrypt(envelope, private_key, info=context.info())
    except (InvalidTag, ValueError) as error:
        raise EnvelopeRejected("envelope does not open with this agent's key") from error
