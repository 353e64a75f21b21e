"""The tokens applications trust: JWTs signed by the broker, and the key set that verifies them.

Encoding and the JWK format are PyJWT's; the keys are Ed25519 (``EdDSA``) from
``cryptography``, kept in a :mod:`~broker.policy.signing_keys` keyring (a file each in the data
dir, or sealed in the store brokers share): each signs from its ``not_before`` for
``lifetime`` seconds. Rotation overlaps both
ways: the next key is made and published a third of a lifetime before it starts signing (so
applications that cache the key set have it before they meet it), and a retired key stays
published until the last token it signed has expired. A shared keyring is re-read at every
rotation check (each second at most), so every broker publishes the same set and signs with
the same key.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.policy.signing_keys import FileKeyring, Keyring, SigningKey
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ALGORITHM = "EdDSA"
DEFAULT_TOKEN_TTL = 3600.0
DEFAULT_KEY_LIFETIME = 30 * 86400.0
DEFAULT_ISSUER = "pta-broker"
#: Start publishing the next key this far into the current one's life.
PUBLISH_NEXT_AT = 2 / 3
#: Rotation is looked at no more often than this (it runs on the sign-in path).
ROTATION_CHECK = 1.0


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A signed token and when it expires (Unix seconds)."""

    token: str
    expires_at: int


class TokenSigner:
    """Signs tokens with the current key; rotates and publishes the keys."""

    def __init__(  # noqa: PLR0913 - each a documented setting
        self,
        keys: Path | Keyring,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = "",
        token_ttl: float = DEFAULT_TOKEN_TTL,
        key_lifetime: float = DEFAULT_KEY_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Load the keys (making the first one if there is none).

        ``keys``: where they are kept, a keyring or a data dir (a file each in its
        ``signing`` folder).

        Raises:
            ValueError: When the token lifetime is not shorter than the key lifetime (a key
                could then retire while tokens it signed are far from expiry, fine, but a
                token outliving two rotations means a very long-lived token: refused).
        """
        if token_ttl <= 0 or key_lifetime <= 0 or token_ttl > key_lifetime:
            raise ValueError("token lifetime must be positive and at most the key lifetime")
        self.issuer = issuer
        self.audience = audience
        self.token_ttl = token_ttl
        self._lifetime = key_lifetime
        self._clock = clock
        self._keyring = FileKeyring(keys) if isinstance(keys, PurePath) else keys
        self._keys = sorted(self._keyring.load(), key=lambda k: k.not_before)
        self._jwks = ""
        self._published: list[str] = []
        self._checked = float("-inf")
        self.rotate()

    def _create(self, not_before: float, *, unless_after: float) -> None:
        """Make a key starting at ``not_before``, unless another broker made a later one."""
        kid = f"{int(not_before * 1000)}-{secrets.token_hex(4)}"
        made = SigningKey(kid, not_before, Ed25519PrivateKey.generate())
        if self._keyring.add(made, unless_after=unless_after):
            self._keys.append(made)
        else:
            self._keys = self._keyring.load()
        self._keys.sort(key=lambda k: k.not_before)

    def _active(self, now: float) -> SigningKey | None:
        """The latest key started; else the earliest (another broker's clock runs ahead)."""
        started = [k for k in self._keys if k.not_before <= now]
        if started:
            return started[-1]
        return self._keys[0] if self._keys else None

    def rotate(self) -> None:
        """Make the next key when due, and drop keys no valid token can need any more.

        Cheap when nothing is due; called before each signature and by the broker's upkeep.
        """
        now = self._clock()
        if now - self._checked < ROTATION_CHECK:
            return
        self._checked = now
        if self._keyring.shared and not self._reload(now):
            return  # Sign with the keys known; look again at the next check.
        active = self._active(now)
        if active is None or now >= active.not_before + self._lifetime:
            latest = self._keys[-1].not_before if self._keys else float("-inf")
            self._create(now, unless_after=latest)
            active = self._active(now)
            if active is None:  # _create() leaves a key: its own or another broker's.
                raise RuntimeError("no signing key")
        successor_at = active.not_before + self._lifetime
        due = now >= active.not_before + self._lifetime * PUBLISH_NEXT_AT
        if due and not any(k.not_before > active.not_before for k in self._keys):
            self._create(successor_at, unless_after=active.not_before)
        self._drop_retired(now)

    def _reload(self, now: float) -> bool:
        """Re-read a shared keyring (another broker may have made or dropped a key).

        Returns:
            False when the store does not answer but a key is known to sign with meanwhile.

        Raises:
            StoreUnavailable: When it does not answer and no key is known.
        """
        try:
            self._keys = sorted(self._keyring.load(), key=lambda k: k.not_before)
        except StoreUnavailable:
            if self._active(now) is None:
                raise
            return False
        return True

    def _drop_retired(self, now: float) -> None:
        """Forget keys whose last token has expired; publish the set when it changed."""
        keep = []
        for key in self._keys:
            later = [k.not_before for k in self._keys if k.not_before > key.not_before]
            retired_at = min(later) if later else None
            if retired_at is not None and retired_at <= now and retired_at + self.token_ttl < now:
                self._keyring.remove(key.kid)
                continue
            keep.append(key)
        self._keys = keep
        # Compare by kid: _create() adds to the list in place, so the list itself says nothing.
        if [k.kid for k in keep] != self._published:
            self._published = [k.kid for k in keep]
            self._jwks = json.dumps({"keys": [_jwk(k) for k in keep]}, sort_keys=True)

    def jwks(self) -> str:
        """The published key set, as JSON."""
        self.rotate()
        return self._jwks

    def issue(self, *, subject: str, tenant: str, methods: list[str], jti: str) -> IssuedToken:
        """Sign a token for a user who has just signed in.

        Args:
            subject: The user's UPN.
            tenant: Their organisation at the broker.
            methods: How they proved it (RFC 8176 ``amr``: ``pwd``, ``otp``).
            jti: The sign-in's request id, so the token and the audit event meet.
        """
        self.rotate()
        now = self._clock()
        key = self._active(now)
        if key is None:  # rotate() always leaves an active key; stay explicit anyway.
            raise RuntimeError("no active signing key")
        expires = int(now + self.token_ttl)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "tenant": tenant,
            "amr": methods,
            "iat": int(now),
            "nbf": int(now),
            "exp": expires,
            "jti": jti,
        }
        if self.audience:
            claims["aud"] = self.audience
        token = jwt.encode(claims, key.key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(token, expires)


def _jwk(key: SigningKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.key.public_key()))
    jwk.update(kid=key.kid, alg=ALGORITHM, use="sig")
    return jwk
