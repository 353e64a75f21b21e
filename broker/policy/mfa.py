"""The second factor: TOTP authenticators (RFC 6238), sealed at rest, and open challenges.

A user's TOTP secret is made at enrolment (``pta-broker mfa enroll``), shown once as an
``otpauth://`` URI, and stored only sealed with AES-256-GCM under a key the operator provides
(a file or an environment variable, never the store), with the tenant and user bound in as
associated data so a sealed secret cannot be moved to another user. Codes are checked with
``cryptography``'s TOTP; a time step once accepted never works again.

Challenges (a right password waiting for its code) live in memory (:class:`Challenges`) for
one broker, where a restart just means signing in again; brokers sharing a store keep them
there (:mod:`broker.policy.shared_challenges`), so a challenge begun at one is completed at
another. Either is a :class:`ChallengeBook`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import time
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from broker.store.records import Challenge
from pta.expiring import ExpiringMap

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from broker.store.records import Location

KEY_BYTES = 32
SECRET_BYTES = 20  # RFC 4226 recommends 160 bits.
NONCE_BYTES = 12
DIGITS = 6
TIME_STEP = 30
#: Codes of the neighbouring steps count too: phone clocks drift and people type slowly.
WINDOW = 1
DEFAULT_CHALLENGE_TTL = 120.0
DEFAULT_CHALLENGE_ATTEMPTS = 3
MAX_CHALLENGES = 100_000
CHALLENGE_ID_BYTES = 24


class MfaKeyError(ValueError):
    """The MFA key is missing, malformed, or not the one the secrets were sealed with."""


class MfaKey:
    """The operator's key that seals TOTP secrets at rest."""

    def __init__(self, raw: bytes) -> None:
        """Wrap 32 raw key bytes.

        Raises:
            MfaKeyError: When the key is not 32 bytes.
        """
        if len(raw) != KEY_BYTES:
            raise MfaKeyError(f"an MFA key is {KEY_BYTES} bytes (base64), made by mfa keygen")
        self._aead = AESGCM(raw)

    def __repr__(self) -> str:
        """Never show the key."""
        return "MfaKey(…)"

    @classmethod
    def from_text(cls, text: str) -> MfaKey:
        """Read a key as ``pta-broker mfa keygen`` writes it (URL-safe base64).

        Raises:
            MfaKeyError: When it is not such a key.
        """
        try:
            raw = base64.urlsafe_b64decode(text.strip().encode() + b"==")
        except (binascii.Error, ValueError):
            raise MfaKeyError("the MFA key is not base64") from None
        return cls(raw)

    @classmethod
    def load(cls, path: Path | None, text: str = "") -> MfaKey | None:
        """The key in file ``path``, else ``text``; None when neither is given.

        Raises:
            MfaKeyError: When the key given is malformed or its file is readable by others.
        """
        if path is not None:
            if path.stat().st_mode & 0o077:
                raise MfaKeyError(f"{path} must be readable by its owner only (chmod 600)")
            return cls.from_text(path.read_text())
        return cls.from_text(text) if text else None

    def seal(self, secret: bytes, tenant: str, user: str) -> bytes:
        """Encrypt a TOTP secret for one user of one tenant."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret, _aad(tenant, user))

    def open(self, sealed: bytes, tenant: str, user: str) -> bytes:
        """Decrypt a sealed TOTP secret.

        Raises:
            MfaKeyError: When it was sealed under another key or for another user.
        """
        try:
            return self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(tenant, user)
            )
        except (InvalidTag, ValueError):
            raise MfaKeyError("this MFA secret was sealed under another key") from None


def _aad(tenant: str, user: str) -> bytes:
    return b"pta-mfa-v1\0" + tenant.encode() + b"\0" + user.encode()


def generate_key() -> str:
    """A new MFA key, as the operator stores it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def new_secret() -> bytes:
    """A new TOTP secret."""
    return os.urandom(SECRET_BYTES)


def _totp(secret: bytes) -> TOTP:
    return TOTP(secret, DIGITS, SHA1(), TIME_STEP)  # noqa: S303 - RFC 6238's default; apps expect it


def provisioning_uri(secret: bytes, account: str, issuer: str) -> str:
    """The ``otpauth://totp/…`` URI an authenticator app scans."""
    return _totp(secret).get_provisioning_uri(account, issuer)


def code_at(secret: bytes, when: float) -> str:
    """The code an authenticator shows at ``when`` (for tests and the demo's own 'phone')."""
    return _totp(secret).generate(int(when)).decode()


def matching_step(secret: bytes, code: str, now: float, *, after: int) -> int | None:
    """The time step whose code ``code`` is, if it is within the window and later than ``after``.

    Steps at or before ``after`` were used already: their codes never count again.
    """
    totp = _totp(secret)
    step = int(now) // TIME_STEP
    for candidate in range(step - WINDOW, step + WINDOW + 1):
        if candidate <= after:
            continue
        expected = totp.generate(candidate * TIME_STEP)
        if hmac.compare_digest(expected, code.encode()):
            return candidate
    return None


def well_formed_code(code: str) -> bool:
    """Whether ``code`` looks like a TOTP code at all (six ASCII digits)."""
    return len(code) == DIGITS and code.isascii() and code.isdigit()


class ChallengeBook(Protocol):
    """Where open challenges are kept, by their unguessable id."""

    #: Seconds a challenge stays open.
    ttl: float

    def open(  # noqa: PLR0913 - the challenge's fields, by name
        self,
        *,
        tenant: str,
        user: str,
        subject: str,
        address: str,
        location: Location,
        request_id: str,
    ) -> str:
        """Open a challenge and return its id (a bearer secret: never log it)."""

    def spend(self, challenge_id: str) -> Challenge | None:
        """Take one try of an open challenge, atomically; None: unknown, expired or used up.

        The challenge returned says how many tries are left after this one. Of two racing
        calls with the last try, one gets it.
        """

    def close(self, challenge_id: str) -> None:
        """Close a challenge (answered, or used up)."""

    def upkeep(self) -> None:
        """Forget expired challenges (called now and then)."""


class Challenges:
    """Open challenges by their unguessable id, in bounded memory."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_CHALLENGE_TTL,
        attempts: int = DEFAULT_CHALLENGE_ATTEMPTS,
        limit: int = MAX_CHALLENGES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start with none open."""
        self.ttl = ttl
        self._attempts = attempts
        self._clock = clock
        #: Oldest first; when full, the expired and then the oldest make room.
        self._open: ExpiringMap[str, Challenge] = ExpiringMap(limit, clock=clock)

    def __len__(self) -> int:
        """How many challenges are open."""
        return len(self._open)

    def open(  # noqa: PLR0913 - the challenge's fields, by name
        self,
        *,
        tenant: str,
        user: str,
        subject: str,
        address: str,
        location: Location,
        request_id: str,
    ) -> str:
        """Open a challenge and return its id (a bearer secret: never log it)."""
        now = self._clock()
        challenge_id = secrets.token_urlsafe(CHALLENGE_ID_BYTES)
        challenge = Challenge(
            tenant=tenant,
            user=user,
            subject=subject,
            address=address,
            location=location,
            request_id=request_id,
            expires=now + self.ttl,
            attempts_left=self._attempts,
        )
        self._open.put(challenge_id, challenge, expires=challenge.expires)
        return challenge_id

    def get(self, challenge_id: str) -> Challenge | None:
        """The open challenge with this id; None when unknown, expired or used up."""
        challenge = self._open.get(challenge_id)
        if challenge is not None and challenge.attempts_left <= 0:
            self._open.pop(challenge_id)
            return None
        return challenge

    def spend(self, challenge_id: str) -> Challenge | None:
        """Take one try of an open challenge (see :meth:`ChallengeBook.spend`)."""
        challenge = self.get(challenge_id)
        if challenge is not None:
            challenge.attempts_left -= 1
        return challenge

    def close(self, challenge_id: str) -> None:
        """Close a challenge (answered, or used up)."""
        self._open.pop(challenge_id)

    def upkeep(self) -> None:
        """Nothing to do: expired challenges make room as new ones come (bounded memory)."""
