"""Private keys at rest: one PKCS#8 PEM form for every key pta keeps in a file.

The TLS keys (ECDSA P-256) and the agents' envelope keys (X25519) are kept the same way:
unencrypted PKCS#8 PEM, protected by the file's 0600 mode (``pta.tls.write_private``) rather
than a passphrase nobody could type at boot. Their loaders check the kind, so a file holding
the wrong key fails at start with a clear message, not at the first handshake or envelope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def private_pem(key: PrivateKeyTypes) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private(pem: bytes) -> PrivateKeyTypes:
    """Load an unencrypted PKCS#8 PEM private key (the caller checks its kind)."""
    return serialization.load_pem_private_key(pem, password=None)
