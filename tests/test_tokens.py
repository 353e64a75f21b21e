"""Enrolment tokens: ``pta/tokens.py`` parses strictly and never shows the secret."""

from __future__ import annotations

import hashlib

import pytest

from pta import tokens
from pta.errors import Unauthenticated

TOKEN_ID = "0123456789abcdef"
SECRET = "Zq3_x-9KpL2mN8vR4tY6wB1cD5eF7gH0jK3lM9nP2qS"
CA_SHA256 = "ab" * 32
TOKEN = f"pta1.{TOKEN_ID}.{SECRET}.{CA_SHA256}"
MALFORMED = "malformed enrolment token: expected pta1.<id>.<secret>.<ca-sha256>"


class TestNewToken:
    """Fresh tokens for the operator to hand out."""

    def test_round_trip(self) -> None:
        """A new token, rendered and parsed back, is the same token."""
        token = tokens.new_token(CA_SHA256)
        parsed = tokens.parse_token(str(token))
        assert parsed == token
        assert parsed.ca_sha256 == CA_SHA256
        assert len(token.token_id) == 16
        assert len(token.secret) == 43

    def test_unique(self) -> None:
        """Two new tokens share neither id nor secret."""
        one, two = tokens.new_token(CA_SHA256), tokens.new_token(CA_SHA256)
        assert one.token_id != two.token_id
        assert one.secret != two.secret


class TestEnrolmentToken:
    """A parsed token: rendering, hashing, comparing."""

    def test_str_renders_all_parts(self) -> None:
        """``str`` gives back the exact text the operator hands to an agent."""
        assert str(tokens.EnrolmentToken(TOKEN_ID, SECRET, CA_SHA256)) == TOKEN

    def test_secret_not_in_repr(self) -> None:
        """``repr`` shows the id and CA pin but never the secret."""
        text = repr(tokens.parse_token(TOKEN))
        assert SECRET not in text
        assert TOKEN_ID in text
        assert CA_SHA256 in text

    def test_secret_hash_is_sha256(self) -> None:
        """What the broker stores is the SHA-256 of the secret."""
        token = tokens.parse_token(TOKEN)
        assert token.secret_hash == hashlib.sha256(SECRET.encode()).digest()
        assert token.secret_hash == tokens.hash_secret(SECRET)

    @pytest.mark.parametrize(
        ("stored", "expected"),
        [
            (hashlib.sha256(SECRET.encode()).digest(), True),
            (hashlib.sha256(b"another secret").digest(), False),
            (b"", False),
            (hashlib.sha256(SECRET.encode()).digest()[:-1], False),
        ],
        ids=["right-hash", "wrong-hash", "empty", "truncated"],
    )
    def test_matches(self, stored: bytes, *, expected: bool) -> None:
        """A token matches only the hash of its own secret."""
        assert tokens.parse_token(TOKEN).matches(stored) is expected


class TestParseToken:
    """Tokens as typed or pasted: strict shape, no echo of the input."""

    @pytest.mark.parametrize(
        "text",
        [TOKEN, f"  {TOKEN}  ", f"{TOKEN}\n", f"\t{TOKEN}\r\n", " " * 126 + TOKEN],
        ids=["bare", "spaces", "newline", "tab-crlf", "padded-to-limit"],
    )
    def test_accepted(self, text: str) -> None:
        """A well-formed token, with whitespace around it, parses into its parts."""
        token = tokens.parse_token(text)
        assert (token.token_id, token.secret, token.ca_sha256) == (TOKEN_ID, SECRET, CA_SHA256)

    @pytest.mark.parametrize(
        "text",
        [
            f"pta2.{TOKEN_ID}.{SECRET}.{CA_SHA256}",
            f"PTA1.{TOKEN_ID}.{SECRET}.{CA_SHA256}",
            f"pta1.{TOKEN_ID[:-1]}.{SECRET}.{CA_SHA256}",
            f"pta1.{TOKEN_ID}.{SECRET[:-1]}.{CA_SHA256}",
            f"pta1.{TOKEN_ID}.{SECRET}.{CA_SHA256[:-1]}",
            f"{TOKEN}.extra",
            f"pta1.{TOKEN_ID}.{SECRET}",
            f"pta1.{'g' * 16}.{SECRET}.{CA_SHA256}",
            f"pta1.{TOKEN_ID.upper()}.{SECRET}.{CA_SHA256}",
            f"pta1.{TOKEN_ID}.{SECRET[:-1]}+.{CA_SHA256}",
            f"pta1.{TOKEN_ID}. {SECRET[1:]}.{CA_SHA256}",
            " " * 127 + TOKEN,
            TOKEN + "0" * 200,
            "",
            "   ",
        ],
        ids=[
            "wrong-prefix",
            "upper-case-prefix",
            "short-id",
            "short-secret",
            "short-ca",
            "extra-part",
            "missing-part",
            "non-hex-id",
            "upper-case-id",
            "bad-secret-char",
            "inner-space",
            "too-long-with-padding",
            "too-long",
            "empty",
            "whitespace-only",
        ],
    )
    def test_malformed_rejected_without_echo(self, text: str) -> None:
        """A malformed token raises Unauthenticated with a fixed message that never holds it."""
        with pytest.raises(Unauthenticated) as caught:
            tokens.parse_token(text)
        assert caught.value.message == MALFORMED
        assert str(caught.value) == MALFORMED
        assert SECRET[:20] not in str(caught.value)
