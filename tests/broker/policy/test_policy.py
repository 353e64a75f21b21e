"""``broker/policy/signin_policy.py``: the account key a user's state is kept under.

Real SQLite store and signer, fake clock: see :mod:`tests.broker.policy.helpers`.
"""

from __future__ import annotations

import pytest

from broker.policy.signin_policy import (
    user_key,
)
from pta.names import parse_upn


class TestUserKey:
    """One counter per person, whatever the spelling."""

    @pytest.mark.parametrize(
        ("typed", "key"),
        [
            ("alice@example.com", "alice@example.com"),
            ("Alice@Example.COM", "alice@example.com"),
            ("\uff21\uff2c\uff29\uff23\uff25@example.com", "alice@example.com"),
            ("STRASSE@example.com", "strasse@example.com"),
            ("straße@example.com", "strasse@example.com"),
            (" alice@example.com", "alice@example.com"),
            ("alice  @example.com", "alice@example.com"),
            ("  ALICE  @example.com", "alice@example.com"),
            ("alice   smith@example.com", "alice smith@example.com"),
            ("ali\u200bce@example.com", "alice@example.com"),
            ("ali\u00adce@example.com", "alice@example.com"),
            ("\ufeffalice@example.com", "alice@example.com"),
        ],
        ids=[
            "plain",
            "mixed-case",
            "fullwidth",
            "upper",
            "sharp-s",
            "leading-space",
            "trailing-spaces",
            "both",
            "inner-run",
            "zero-width-space",
            "soft-hyphen",
            "bom",
        ],
    )
    def test_user_key(self, typed: str, key: str) -> None:
        """Every spelling LDAP matching treats as the same name is one user (RFC 4518)."""
        assert user_key(parse_upn(typed)) == key
