"""From a bind result to the user's outcome: ``agent/outcomes.py`` against a table."""

from __future__ import annotations

import pytest

from agent import outcomes
from pta.v1 import outcome_pb2

Outcome = outcome_pb2.Outcome


def ad_message(subcode: str) -> str:
    """An Active Directory bind failure message as Windows Server sends it."""
    return (
        "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, "
        f"data {subcode}, v4563\x00"
    )


#: Microsoft's documented AcceptSecurityContext ``data`` values and what they must mean.
AD_TABLE = [
    ("52e", Outcome.INVALID_CREDENTIALS),
    ("525", Outcome.UNKNOWN_USER),
    ("530", Outcome.ACCOUNT_RESTRICTED),
    ("531", Outcome.ACCOUNT_RESTRICTED),
    ("532", Outcome.PASSWORD_EXPIRED),
    ("533", Outcome.ACCOUNT_DISABLED),
    ("568", Outcome.ACCOUNT_RESTRICTED),
    ("701", Outcome.ACCOUNT_EXPIRED),
    ("773", Outcome.PASSWORD_MUST_CHANGE),
    ("775", Outcome.ACCOUNT_LOCKED),
]
AD_IDS = [
    "52e-bad-password",
    "525-no-such-user",
    "530-logon-hours",
    "531-workstation",
    "532-password-expired",
    "533-disabled",
    "568-too-many-sids",
    "701-account-expired",
    "773-must-change",
    "775-locked",
]


class TestAdSubcode:
    """Finding the ``data XXX`` part of an AD message."""

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            (ad_message("52e"), "52e"),
            (ad_message("52E"), "52e"),
            ("80090308: LDAPERR: DSID-0C0903A9, COMMENT: ERROR, DATA 775, V1DB1", "775"),
            ("data 0000052e", "0000052e"),
            ("", None),
            ("Invalid credentials", None),
            ("metadata 52e", None),
            ("data 5", None),
            ("data 52e1234567", None),
        ],
        ids=[
            "windows-2016",
            "upper-case-subcode",
            "all-upper-case",
            "eight-digits",
            "empty",
            "openldap",
            "not-a-word",
            "too-short",
            "too-long",
        ],
    )
    def test_extracts(self, message: str, expected: str | None) -> None:
        """The subcode is found case-insensitively and returned lower-case, or None."""
        assert outcomes.ad_subcode(message) == expected


class TestFromBind:
    """Every bind result maps to exactly one outcome."""

    @pytest.mark.parametrize(("subcode", "expected"), AD_TABLE, ids=AD_IDS)
    def test_ad_subcodes(self, subcode: str, expected: outcome_pb2.Outcome) -> None:
        """Result 49 with an AD subcode gives that subcode's specific outcome."""
        got = outcomes.from_bind(outcomes.INVALID_CREDENTIALS_CODE, ad_message(subcode))
        assert Outcome.Name(got) == Outcome.Name(expected)

    def test_table_covers_module(self) -> None:
        """The module's table is exactly the documented one tested here."""
        module_table = outcomes.AD_SUBCODES
        assert module_table == dict(AD_TABLE)

    @pytest.mark.parametrize(
        ("subcode", "expected"),
        [("775", Outcome.ACCOUNT_LOCKED), ("52E", Outcome.INVALID_CREDENTIALS)],
        ids=["lower", "upper"],
    )
    def test_case_insensitive(self, subcode: str, expected: outcome_pb2.Outcome) -> None:
        """Upper-case messages and subcodes map like lower-case ones."""
        message = ad_message(subcode).upper()
        assert Outcome.Name(outcomes.from_bind(49, message)) == Outcome.Name(expected)

    @pytest.mark.parametrize(
        ("code", "message", "expected"),
        [
            (0, "", Outcome.SUCCESS),
            (0, ad_message("775"), Outcome.SUCCESS),
            (49, "", Outcome.INVALID_CREDENTIALS),
            (49, "Invalid credentials", Outcome.INVALID_CREDENTIALS),
            (49, ad_message("999"), Outcome.INVALID_CREDENTIALS),
            (49, ad_message("0"), Outcome.INVALID_CREDENTIALS),
            (53, "", Outcome.ACCOUNT_DISABLED),
            (53, "Account disabled", Outcome.ACCOUNT_DISABLED),
            (1, "operationsError", Outcome.DIRECTORY_UNAVAILABLE),
            (32, "noSuchObject", Outcome.DIRECTORY_UNAVAILABLE),
            (50, ad_message("775"), Outcome.DIRECTORY_UNAVAILABLE),
            (51, "busy", Outcome.DIRECTORY_UNAVAILABLE),
            (52, "unavailable", Outcome.DIRECTORY_UNAVAILABLE),
            (80, "other", Outcome.DIRECTORY_UNAVAILABLE),
            (-1, "", Outcome.DIRECTORY_UNAVAILABLE),
        ],
        ids=[
            "success",
            "success-ignores-message",
            "49-no-message",
            "49-openldap",
            "49-unknown-subcode",
            "49-short-subcode",
            "53-unwilling",
            "53-with-message",
            "1-operations-error",
            "32-no-such-object",
            "50-access-ignores-subcode",
            "51-busy",
            "52-unavailable",
            "80-other",
            "negative",
        ],
    )
    def test_result_codes(self, code: int, message: str, expected: outcome_pb2.Outcome) -> None:
        """0 is success, 49 a bad password, 53 disabled; anything else says nothing of it."""
        assert Outcome.Name(outcomes.from_bind(code, message)) == Outcome.Name(expected)
