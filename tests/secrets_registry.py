"""Every secret a test sends is made or registered here, so that the final scan looks for it.

``tests/test_secrets.py`` (run last) proves that no password, code or token the suite sent
reached a log, the store or any other file of the run. It can only look for what it knows: a
secret typed inline in a test (a lockout guess, a load's wrong password) used to be missed. So
secrets are not typed inline. A test asks :func:`secret` for a fresh one, or passes a value
that must have an exact shape (a six-digit code, a too-short password) or that the system made
(a TOTP secret, an MFA challenge, a signed token) through :func:`known`; enrolment tokens go
through :func:`enrolment_token`. ``tests/test_secrets_registry.py`` fails on a secret literal
written straight into a password, code or token argument, and the helpers that send (in
``tests/support.py``) refuse a password that was not registered.

A fresh secret is ``<label>~<ten random letters and digits>``: unique (so the scan has no false
positives, and a leak names the test that sent it), and found in a file with one pattern (the
``~`` and the tail), however many thousands the suite sent.
"""

from __future__ import annotations

import re
import secrets as random_source
import string
from typing import TYPE_CHECKING

from pta import tokens
from pta.errors import Unauthenticated

if TYPE_CHECKING:
    from pathlib import Path

MARK = "~"
TAIL_CHARS = 10
_ALPHABET = string.ascii_letters + string.digits
#: How a fresh secret ends: the scan finds every candidate with this one pattern.
TAIL = re.compile(re.escape(MARK) + "[A-Za-z0-9]{" + str(TAIL_CHARS) + "}")
#: Shorter values given to :func:`known` are looked for only as whole JSON strings in logs: a
#: code like ``123456`` occurs by chance in any file full of hex and numbers.
SHORT = 8

#: Fresh secrets by their random tail.
BY_TAIL: dict[str, str] = {}
#: Secrets given by value: shaped literals, and secrets the system made.
GIVEN: set[str] = set()
#: Enrolment-token secrets: the data directory of the broker that issued each, and its id. The
#: broker keeps their SHA-256 by design; every other secret's plain digest must appear nowhere.
ENROLMENT: dict[str, tuple[Path, str]] = {}


def secret(label: str = "pw") -> str:
    """A fresh, registered secret: ``label`` (the test's wording, its shape) and a random tail.

    Args:
        label: What the secret is for (``guess``, ``Ad-new-pw!``); it keeps any character
            class a password policy wants, and the tail adds letters and digits.

    Returns:
        A value no other call returns.
    """
    if MARK in label:
        raise ValueError(f"a label may not contain {MARK!r}")
    while True:
        tail = "".join(random_source.choice(_ALPHABET) for _ in range(TAIL_CHARS))
        if tail not in BY_TAIL:
            value = f"{label}{MARK}{tail}"
            BY_TAIL[tail] = value
            return value


def known(value: str) -> str:
    """Register a secret whose value is given: a literal of an exact shape, or one made elsewhere.

    Use :func:`secret` unless the value itself matters (a six-digit code, a password the
    directory must refuse as too short) or comes from the system (a TOTP secret, an MFA
    challenge id, a signed token).

    Returns:
        ``value``, so the call can wrap it where it is used.
    """
    if not value:
        raise ValueError("an empty value is no secret: send it as it is")
    GIVEN.add(value)
    return value


def enrolment_token(token: str, data_dir: Path) -> str:
    """Register the secret part of an enrolment token issued by the broker of ``data_dir``.

    Returns:
        ``token``, unchanged.
    """
    parsed = tokens.parse_token(token)
    ENROLMENT[parsed.secret] = (data_dir, parsed.token_id)
    return token


def registered(value: str) -> bool:
    """Whether ``value`` was made or registered here (a fresh secret, a given one, a token)."""
    match = TAIL.search(value)
    fresh = match is not None and BY_TAIL.get(match.group()[len(MARK) :]) == value
    return fresh or value in GIVEN or value in ENROLMENT


def require(value: str, what: str = "password") -> str:
    """Refuse to send a secret the scan would not look for; an empty value passes.

    Returns:
        ``value``.

    Raises:
        AssertionError: When ``value`` is not empty and was never registered.
    """
    if value and not registered(value):
        raise AssertionError(
            f"a {what} sent without tests.secrets_registry (secret() or known()): the final "
            "scan would not look for it"
        )
    return value


def require_token(token: str) -> str:
    """As :func:`require`, for an enrolment token: its secret must be registered.

    A token that does not parse carries no usable secret (the malformed-token tests).

    Returns:
        ``token``.

    Raises:
        AssertionError: When the token parses and its secret was never registered.
    """
    try:
        parsed = tokens.parse_token(token)
    except Unauthenticated:
        return token
    if parsed.secret not in ENROLMENT:
        raise AssertionError("an enrolment token sent without tests.secrets_registry")
    return token


def passwords() -> set[str]:
    """Every registered secret but the enrolment tokens' (whose digest the store keeps)."""
    return set(BY_TAIL.values()) | GIVEN
