"""From what a directory said about a bind to the one outcome the user gets.

Pure functions over (LDAP result code, diagnostic message): tested against a table, no I/O.
Active Directory puts the reason for a failed bind in the message as ``data XXX``; only that
part is parsed, because the DSID and version around it differ between Windows builds.
"""

from __future__ import annotations

import re

from pta.v1 import outcome_pb2

Outcome = outcome_pb2.Outcome

SUCCESS_CODE = 0
INVALID_CREDENTIALS_CODE = 49
#: Codes that mean "the account may not bind", whatever the password.
UNWILLING_TO_PERFORM = 53
_AD_DATA = re.compile(r"\bdata ([0-9a-f]{3,8})\b", re.IGNORECASE)

#: Active Directory's bind subcodes (Microsoft's AcceptSecurityContext ``data`` values).
AD_SUBCODES: dict[str, outcome_pb2.Outcome] = {
    "52e": Outcome.INVALID_CREDENTIALS,
    "525": Outcome.UNKNOWN_USER,
    "530": Outcome.ACCOUNT_RESTRICTED,
    "531": Outcome.ACCOUNT_RESTRICTED,
    "532": Outcome.PASSWORD_EXPIRED,
    "533": Outcome.ACCOUNT_DISABLED,
    "568": Outcome.ACCOUNT_RESTRICTED,
    "701": Outcome.ACCOUNT_EXPIRED,
    "773": Outcome.PASSWORD_MUST_CHANGE,
    "775": Outcome.ACCOUNT_LOCKED,
}


def ad_subcode(message: str) -> str | None:
    """Return the ``data XXX`` subcode of an AD bind failure, lower-case, or None."""
    match = _AD_DATA.search(message or "")
    return match[1].lower() if match else None


def from_bind(result_code: int, message: str) -> outcome_pb2.Outcome:
    """Map a simple bind's result to an outcome.

    Args:
        result_code: The LDAP result code of the bind.
        message: The server's diagnostic message (AD's carries the subcode).

    Returns:
        SUCCESS, or the most specific failure the server let us see.
    """
    if result_code == SUCCESS_CODE:
        return Outcome.SUCCESS
    if result_code == INVALID_CREDENTIALS_CODE:
        subcode = ad_subcode(message)
        if subcode is not None:
            return AD_SUBCODES.get(subcode, Outcome.INVALID_CREDENTIALS)
        return Outcome.INVALID_CREDENTIALS
    if result_code == UNWILLING_TO_PERFORM:
        return Outcome.ACCOUNT_DISABLED
    return Outcome.DIRECTORY_UNAVAILABLE
