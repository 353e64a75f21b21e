"""User names as the contract carries them: ``user@domain``, with limits checked once.

The domain (UPN suffix) picks the tenant at the broker and the directory at the agent, so both
parse it here, the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pta.errors import InvalidRequest

MAX_USERNAME_BYTES = 256
MAX_PASSWORD_BYTES = 1024
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True, slots=True)
class Upn:
    """A user principal name split at its last ``@``; the domain is lower-cased."""

    local: str
    domain: str

    def __str__(self) -> str:
        """Render as ``local@domain``."""
        return f"{self.local}@{self.domain}"


def normalize_domain(domain: str) -> str:
    """Lower-case and check a UPN suffix.

    Raises:
        InvalidRequest: When it is not a DNS-style name.
    """
    lowered = domain.strip().lower().rstrip(".")
    # ASCII only (IDNs arrive as punycode): lower() would map e.g. the Kelvin sign to "k".
    if not domain.isascii() or not _DOMAIN.match(lowered):
        raise InvalidRequest(f"not a valid domain name: {lowered[:64]!r}")
    return lowered


def parse_upn(username: str) -> Upn:
    """Split and check a username.

    Raises:
        InvalidRequest: When it is empty, too long, has control characters or no domain.
    """
    if not username:
        raise InvalidRequest("username is required")
    if len(username.encode()) > MAX_USERNAME_BYTES:
        raise InvalidRequest(f"username is longer than {MAX_USERNAME_BYTES} bytes")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in username):  # noqa: PLR2004 - C0 controls
        raise InvalidRequest("username contains control characters")
    local, sep, domain = username.rpartition("@")
    if not sep or not local:
        raise InvalidRequest("username must be user@domain")
    return Upn(local, normalize_domain(domain))


def check_password(password: str) -> None:
    """Check a password's size (never its content, which is the directory's business).

    Raises:
        InvalidRequest: When it is empty (an empty password is an anonymous bind on some
            directories) or too long.
    """
    if not password:
        raise InvalidRequest("password is required")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidRequest(f"password is longer than {MAX_PASSWORD_BYTES} bytes")
