"""Credential envelopes: ``pta/sealing.py`` opens only for the right key in the right context."""

from __future__ import annotations

import dataclasses
import struct
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from pta import sealing
from pta.errors import EnvelopeRejected

if TYPE_CHECKING:
    from collections.abc import Callable

CONTEXT = sealing.EnvelopeContext(
    tenant="acme",
    agent_id="agent-1",
    request_id="0123456789abcdef01234567",
    domain="example.com",
    deadline_unix_ms=1_800_000_000_000,
)
PLAINTEXT = b"\n\x11alice@example.com\x12\x0bAlice-pw-1!"
#: What HPKE adds around the plaintext: the X25519 encapsulated key and the AEAD tag.
OVERHEAD = 32 + 16


@pytest.fixture(scope="module")
def key() -> x25519.X25519PrivateKey:
    """The agent's envelope key."""
    return sealing.generate_key()


@pytest.fixture(scope="module")
def envelope(key: x25519.X25519PrivateKey) -> bytes:
    """:data:`PLAINTEXT` sealed to ``key`` in :data:`CONTEXT`."""
    return sealing.seal(PLAINTEXT, key.public_key(), CONTEXT)


def _flip(data: bytes, index: int) -> bytes:
    flipped = bytearray(data)
    flipped[index] ^= 0x01
    return bytes(flipped)


class TestEnvelopeContext:
    """The binding is encoded so that no two different contexts share an encoding."""

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            ({"tenant": "ab", "agent_id": "c"}, {"tenant": "a", "agent_id": "bc"}),
            ({"agent_id": "ab", "request_id": "c"}, {"agent_id": "a", "request_id": "bc"}),
            ({"request_id": "ab", "domain": "c"}, {"request_id": "a", "domain": "bc"}),
            ({"tenant": "", "agent_id": "x"}, {"tenant": "x", "agent_id": ""}),
            ({"deadline_unix_ms": 1}, {"deadline_unix_ms": 256}),
        ],
        ids=[
            "tenant-agent-boundary",
            "agent-request-boundary",
            "request-domain-boundary",
            "empty-field-shift",
            "deadline",
        ],
    )
    def test_info_unambiguous(self, first: dict[str, str], second: dict[str, str]) -> None:
        """Contexts that concatenate to the same text still give different info bytes."""
        one = dataclasses.replace(CONTEXT, **first)  # type: ignore[arg-type]
        two = dataclasses.replace(CONTEXT, **second)  # type: ignore[arg-type]
        assert one.info() != two.info()

    def test_info_layout(self) -> None:
        """Info is the label, each text field length-prefixed, then the 64-bit deadline."""
        info = CONTEXT.info()
        assert info.startswith(sealing.INFO_LABEL + b"\x00\x04acme\x00\x07agent-1")
        assert info.endswith(b"\x00\x0bexample.com" + struct.pack(">q", 1_800_000_000_000))

    def test_info_deterministic(self) -> None:
        """Both sides building the same context get the same info."""
        assert dataclasses.replace(CONTEXT).info() == CONTEXT.info()


class TestSeal:
    """Sealing to an agent's public key."""

    def test_round_trip(self, key: x25519.X25519PrivateKey, envelope: bytes) -> None:
        """What is sealed opens, unchanged, with the right key in the same context."""
        assert sealing.open_envelope(envelope, key, CONTEXT) == PLAINTEXT

    def test_hides_plaintext(self, envelope: bytes) -> None:
        """The envelope carries neither the password nor the username in clear."""
        assert b"Alice-pw-1!" not in envelope
        assert b"alice@example.com" not in envelope
        assert len(envelope) == len(PLAINTEXT) + OVERHEAD

    def test_fresh_each_time(self, key: x25519.X25519PrivateKey, envelope: bytes) -> None:
        """Sealing the same plaintext twice gives different envelopes (ephemeral key)."""
        assert sealing.seal(PLAINTEXT, key.public_key(), CONTEXT) != envelope


class TestOpenEnvelope:
    """Anything but the exact envelope, key and context is rejected."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("tenant", "globex"),
            ("agent_id", "agent-2"),
            ("request_id", "0123456789abcdef01234568"),
            ("domain", "example.org"),
            ("deadline_unix_ms", 1_800_000_000_001),
        ],
        ids=["tenant", "agent_id", "request_id", "domain", "deadline"],
    )
    def test_other_context_rejected(
        self,
        key: x25519.X25519PrivateKey,
        envelope: bytes,
        field: str,
        value: str | int,
    ) -> None:
        """An envelope moved to another tenant, agent, request, domain or deadline won't open."""
        moved = dataclasses.replace(CONTEXT, **{field: value})  # type: ignore[arg-type]
        with pytest.raises(EnvelopeRejected):
            sealing.open_envelope(envelope, key, moved)

    def test_wrong_key_rejected(self, envelope: bytes) -> None:
        """Another agent's key does not open the envelope."""
        with pytest.raises(EnvelopeRejected):
            sealing.open_envelope(envelope, sealing.generate_key(), CONTEXT)

    @pytest.mark.parametrize(
        "damage",
        [
            lambda e: e[:-1],
            lambda e: e[:OVERHEAD],
            lambda e: e[:31],
            lambda e: _flip(e, 0),
            lambda e: _flip(e, 40),
            lambda e: _flip(e, len(e) - 1),
            lambda e: e + b"\x00",
            lambda _: b"",
        ],
        ids=[
            "truncated-tag",
            "only-overhead",
            "truncated-key",
            "flipped-key",
            "flipped-ciphertext",
            "flipped-tag",
            "appended-byte",
            "empty",
        ],
    )
    def test_damaged_rejected(
        self,
        key: x25519.X25519PrivateKey,
        envelope: bytes,
        damage: Callable[[bytes], bytes],
    ) -> None:
        """Truncated, bit-flipped, extended and empty envelopes are rejected."""
        with pytest.raises(EnvelopeRejected):
            sealing.open_envelope(damage(envelope), key, CONTEXT)

    def test_oversized_rejected_before_opening(self, key: x25519.X25519PrivateKey) -> None:
        """A genuine envelope one byte over the limit is refused as too large."""
        plaintext = b"x" * (sealing.MAX_ENVELOPE_BYTES - OVERHEAD + 1)
        envelope = sealing.seal(plaintext, key.public_key(), CONTEXT)
        with pytest.raises(EnvelopeRejected, match="too large"):
            sealing.open_envelope(envelope, key, CONTEXT)

    def test_largest_allowed_opens(self, key: x25519.X25519PrivateKey) -> None:
        """An envelope of exactly the maximum size still opens."""
        plaintext = b"x" * (sealing.MAX_ENVELOPE_BYTES - OVERHEAD)
        envelope = sealing.seal(plaintext, key.public_key(), CONTEXT)
        assert len(envelope) == sealing.MAX_ENVELOPE_BYTES
        assert sealing.open_envelope(envelope, key, CONTEXT) == plaintext

    def test_rejection_message_is_safe(self, key: x25519.X25519PrivateKey, envelope: bytes) -> None:
        """The rejection names no context field and carries no envelope bytes."""
        moved = dataclasses.replace(CONTEXT, tenant="globex")
        with pytest.raises(EnvelopeRejected) as caught:
            sealing.open_envelope(envelope, key, moved)
        assert "globex" not in caught.value.message
        assert CONTEXT.request_id not in caught.value.message

    def test_overlong_context_field_rejected(
        self, key: x25519.X25519PrivateKey, envelope: bytes
    ) -> None:
        """A context field too long to encode is a rejected envelope, not a crash."""
        moved = dataclasses.replace(CONTEXT, domain="a" * 70_000)
        with pytest.raises(EnvelopeRejected):
            sealing.open_envelope(envelope, key, moved)


class TestLoadPublicKey:
    """Raw public keys from enrolment requests."""

    @pytest.mark.parametrize("size", [0, 31, 33, 64], ids=["empty", "short", "long", "double"])
    def test_refuses_wrong_size(self, size: int) -> None:
        """Anything but exactly 32 bytes is refused."""
        with pytest.raises(ValueError, match="32 bytes"):
            sealing.load_public_key(b"\x09" * size)

    def test_round_trip(self, key: x25519.X25519PrivateKey) -> None:
        """The raw bytes load back into a key that envelopes for ``key`` can be sealed to."""
        raw = sealing.public_key_bytes(key)
        assert len(raw) == sealing.PUBLIC_KEY_BYTES
        public = sealing.load_public_key(raw)
        assert public.public_bytes_raw() == raw
        envelope = sealing.seal(PLAINTEXT, public, CONTEXT)
        assert sealing.open_envelope(envelope, key, CONTEXT) == PLAINTEXT


class TestPrivateKeyFile:
    """The agent's envelope key in its state file."""

    def test_pem_round_trip(self, key: x25519.X25519PrivateKey) -> None:
        """The PKCS#8 PEM loads back into the same key."""
        pem = sealing.private_key_bytes(key)
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
        loaded = sealing.load_private_key(pem)
        assert sealing.public_key_bytes(loaded) == sealing.public_key_bytes(key)

    def test_refuses_other_key_type(self) -> None:
        """A PEM holding another kind of key is refused with TypeError."""
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(TypeError, match="X25519"):
            sealing.load_private_key(pem)


class TestWeakKeys:
    """Keys that would break sealing for a whole tenant are refused where they come in."""

    def test_low_order_point_is_refused(self) -> None:
        """The all-zero X25519 point cannot be an agent's envelope key."""
        with pytest.raises(ValueError, match="usable"):
            sealing.load_public_key(bytes(32))
