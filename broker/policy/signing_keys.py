"""Where the token-signing keys are kept: files in the data dir, or sealed in a shared store.

One broker keeps its keys as files (``D/signing/<not_before_ms>-<id>.pem``, 0600). Brokers
sharing a store must sign with the same keys, or an application holding one broker's key set
would refuse another's tokens: their keys live in the store, each sealed with AES-256-GCM
(its kid bound in as associated data) under a key derived from the cluster's CA key, which
every broker of the cluster holds on its own disk and the store never sees. A store dump alone
signs nothing.

Two brokers may find a new key due at the same moment: making one is conditional ("unless a
key starting after this one exists"), so exactly one is made, and the other reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pta import tls

if TYPE_CHECKING:
    from pathlib import Path

    from broker.store.protocols import ClusterStore

SIGNING_DIR = "signing"
NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One Ed25519 key and when it signs."""

    kid: str
    not_before: float
    key: Ed25519PrivateKey


class Keyring(Protocol):
    """The signing keys, wherever they are kept."""

    #: Whether other brokers change it too (then it is re-read now and then).
    shared: bool

    def load(self) -> list[SigningKey]:
        """Every key kept, in no particular order."""

    def add(self, key: SigningKey, *, unless_after: float) -> bool:
        """Keep ``key``, unless a key starting after ``unless_after`` is kept already."""

    def remove(self, kid: str) -> None:
        """Forget a key no valid token can need (idempotent)."""


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_pem(pem: bytes) -> Ed25519PrivateKey | None:
    key = serialization.load_pem_private_key(pem, password=None)
    return key if isinstance(key, Ed25519PrivateKey) else None


class FileKeyring:
    """One broker's keys, a file each in ``D/signing`` (0600)."""

    shared = False

    def __init__(self, data_dir: Path) -> None:
        """Keep keys in ``data_dir/signing`` (made 0700 if missing)."""
        self._dir = data_dir / SIGNING_DIR
        self._dir.mkdir(mode=0o700, exist_ok=True)

    def load(self) -> list[SigningKey]:
        """The keys on disk; files not named ``<not_before_ms>-<id>.pem`` are left alone."""
        keys = []
        for path in self._dir.glob("*.pem"):
            stamp, _, kid = path.stem.partition("-")
            if not stamp.isdigit() or not kid:
                continue
            if (key := _load_pem(path.read_bytes())) is not None:
                keys.append(SigningKey(path.stem, int(stamp) / 1000, key))
        return keys

    def add(self, key: SigningKey, *, unless_after: float) -> bool:
        """Write the key's file (one process owns the data dir: nobody races it)."""
        del unless_after
        tls.write_private(self._dir / f"{key.kid}.pem", _pem(key.key))
        return True

    def remove(self, kid: str) -> None:
        """Delete the key's file."""
        (self._dir / f"{kid}.pem").unlink(missing_ok=True)


class StoreKeyring:
    """The cluster's keys in its shared store, sealed under a key derived from its CA."""

    shared = True

    def __init__(self, store: ClusterStore, sealing_key: bytes) -> None:
        """Keep keys in ``store``, sealed with ``sealing_key`` (32 bytes, never stored)."""
        self._store = store
        self._aead = AESGCM(sealing_key)

    def load(self) -> list[SigningKey]:
        """The keys in the store that open under this cluster's sealing key.

        A key sealed under another key (another CA) is skipped: it cannot sign for us.
        """
        keys = []
        for kid, not_before, sealed in self._store.signing_keys():
            try:
                pem = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], kid.encode())
            except InvalidTag:
                continue
            if (key := _load_pem(pem)) is not None:
                keys.append(SigningKey(kid, not_before, key))
        return keys

    def add(self, key: SigningKey, *, unless_after: float) -> bool:
        """Seal and keep the key, unless another broker made a later one first."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, _pem(key.key), key.kid.encode())
        return self._store.add_signing_key(
            key.kid, key.not_before, sealed, unless_after=unless_after
        )

    def remove(self, kid: str) -> None:
        """Delete the key from the store."""
        self._store.remove_signing_key(kid)
