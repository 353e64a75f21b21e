"""``pta/keys.py`` and its two users: every private key at rest is PKCS#8 PEM, kind checked."""

from __future__ import annotations

import pytest

from pta import keys, sealing, tls


class TestPrivateKeysAtRest:
    """One form for TLS and envelope keys; each loader refuses the other's key."""

    def test_tls_key_round_trip(self) -> None:
        """A P-256 key comes back equal, from unencrypted PKCS#8 PEM."""
        key = tls.new_private_key()
        pem = tls.key_pem(key)
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
        assert tls.load_key(pem).private_numbers() == key.private_numbers()

    def test_envelope_key_round_trip(self) -> None:
        """An X25519 key comes back with the same public half."""
        key = sealing.generate_key()
        pem = sealing.private_key_bytes(key)
        assert pem == keys.private_pem(key)
        again = sealing.load_private_key(pem)
        assert sealing.public_key_bytes(again) == sealing.public_key_bytes(key)

    def test_each_loader_refuses_the_other_kind(self) -> None:
        """An envelope key where a TLS key belongs, and the reverse: TypeError, says which."""
        with pytest.raises(TypeError, match="ECDSA"):
            tls.load_key(sealing.private_key_bytes(sealing.generate_key()))
        with pytest.raises(TypeError, match="X25519"):
            sealing.load_private_key(tls.key_pem(tls.new_private_key()))
