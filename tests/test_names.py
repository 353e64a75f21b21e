"""User names and passwords as the contract carries them: ``pta/names.py``."""

from __future__ import annotations

import pytest

from pta import names
from pta.errors import InvalidRequest

LONGEST_LABEL = "a" * 63
#: A 253-character domain, the longest DNS allows.
LONGEST_DOMAIN = ".".join([LONGEST_LABEL] * 3 + ["b" * 61])


class TestParseUpn:
    """Splitting and checking ``user@domain``."""

    @pytest.mark.parametrize(
        ("username", "local", "domain"),
        [
            ("alice@example.com", "alice", "example.com"),
            ("Alice@EXAMPLE.Com", "Alice", "example.com"),
            ("a@b@example.com", "a@b", "example.com"),
            ("o'brien+x,y@example.com", "o'brien+x,y", "example.com"),
            ("jürgen@example.com", "jürgen", "example.com"),
            ("alice@example.com.", "alice", "example.com"),
            ("alice@xn--bcher-kva.example", "alice", "xn--bcher-kva.example"),
            ("é" * 122 + "@example.com", "é" * 122, "example.com"),
        ],
        ids=[
            "plain",
            "upper-case-domain",
            "split-at-last-at",
            "punctuation",
            "unicode-local",
            "trailing-dot",
            "punycode-domain",
            "exactly-max-bytes",
        ],
    )
    def test_accepted(self, username: str, local: str, domain: str) -> None:
        """A valid name splits at its last ``@``; only the domain is lower-cased."""
        upn = names.parse_upn(username)
        assert (upn.local, upn.domain) == (local, domain)
        assert str(upn) == f"{local}@{domain}"

    @pytest.mark.parametrize(
        "username",
        [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice\x00@example.com",
            "ali\nce@example.com",
            "alice@exa\tmple.com",
            "alice\x1b[31m@example.com",
            "alice\x7f@example.com",
            "é" * 123 + "@example.com",
            "a" * 257,
            "alice@-example.com",
            "alice@example-.com",
            "alice@exa_mple.com",
            "alice@example..com",
            "alice@bücher.example",
            "alice@ex ample.com",
            f"alice@{LONGEST_LABEL}a.com",
            "alice@.",
        ],
        ids=[
            "empty",
            "no-at",
            "empty-domain",
            "empty-local",
            "nul",
            "newline",
            "tab",
            "escape-sequence",
            "delete",
            "too-many-bytes-few-chars",
            "too-long-ascii",
            "leading-hyphen",
            "trailing-hyphen",
            "underscore",
            "empty-label",
            "non-ascii-domain",
            "space-in-domain",
            "label-too-long",
            "only-dot",
        ],
    )
    def test_rejected(self, username: str) -> None:
        """Empty, overlong, control-character, domain-less or badly-domained names are refused."""
        with pytest.raises(InvalidRequest):
            names.parse_upn(username)

    def test_byte_limit_counts_utf8(self) -> None:
        """The limit is in UTF-8 bytes: 135 characters of two bytes each are too many."""
        username = "é" * 123 + "@example.com"
        assert len(username) < names.MAX_USERNAME_BYTES
        with pytest.raises(InvalidRequest, match="longer than 256 bytes"):
            names.parse_upn(username)


class TestNormalizeDomain:
    """UPN suffixes in the one canonical form."""

    @pytest.mark.parametrize(
        ("domain", "expected"),
        [
            ("Example.COM", "example.com"),
            (" example.com. ", "example.com"),
            ("localhost", "localhost"),
            (LONGEST_DOMAIN, LONGEST_DOMAIN),
        ],
        ids=["case", "spaces-and-dot", "single-label", "longest"],
    )
    def test_accepted(self, domain: str, expected: str) -> None:
        """Valid domains are lower-cased and stripped of spaces and a final dot."""
        assert names.normalize_domain(domain) == expected

    @pytest.mark.parametrize(
        "domain",
        ["", ".", LONGEST_DOMAIN + "b", "a.-b", "a b"],
        ids=["empty", "dot", "too-long", "hyphen-start", "space"],
    )
    def test_rejected(self, domain: str) -> None:
        """Anything not a DNS-style name is refused."""
        with pytest.raises(InvalidRequest, match="not a valid domain name"):
            names.normalize_domain(domain)


class TestCheckPassword:
    """Password size limits, counted in UTF-8 bytes."""

    @pytest.mark.parametrize(
        "password",
        ["x", " ", "x" * 1024, "é" * 512, "€" * 341, "😀" * 256],
        ids=["one-char", "space", "max-ascii", "max-two-byte", "three-byte", "max-four-byte"],
    )
    def test_accepted(self, password: str) -> None:
        """Any non-empty password of at most 1024 UTF-8 bytes passes."""
        assert 0 < len(password.encode()) <= names.MAX_PASSWORD_BYTES
        names.check_password(password)  # Raises on failure.

    @pytest.mark.parametrize(
        ("password", "message"),
        [
            ("", "password is required"),
            ("x" * 1025, "password is longer than 1024 bytes"),
            ("é" * 513, "password is longer than 1024 bytes"),
            ("😀" * 257, "password is longer than 1024 bytes"),
        ],
        ids=["empty", "max-plus-one", "two-byte-over", "four-byte-over"],
    )
    def test_rejected(self, password: str, message: str) -> None:
        """Empty and over-1024-byte passwords are refused, with a message that omits them."""
        with pytest.raises(InvalidRequest) as caught:
            names.check_password(password)
        assert caught.value.message == message
