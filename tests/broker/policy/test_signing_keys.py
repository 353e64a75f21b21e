"""Signing keys brokers share: sealed in the store, the same set and key at every broker.

Real stores (two handles, as two brokers have), real Ed25519 keys, real CAs; tokens verified
as an application does (the helpers of ``test_signing``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from broker.assembly import SIGNING_KEY_PURPOSE
from broker.policy.signing import TokenSigner
from broker.policy.signing_keys import StoreKeyring
from broker.store import open_store
from broker.trust.ca import CertificateAuthority
from tests.broker.policy.test_signing import (
    AUDIENCE,
    ISSUER,
    LIFETIME,
    PUBLISH_AT,
    TICK,
    TTL,
    FakeClock,
    issue,
    kid_of,
    kids,
    verify,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from broker.store.protocols import Store


@pytest.fixture
def start() -> float:
    """A fake start: the first key is this old when rotation tests verify (see test_signing)."""
    return time.time() - LIFETIME - 50


@pytest.fixture
def clock(start: float) -> FakeClock:
    """A fake clock at :func:`start`."""
    return FakeClock(start)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    """The cluster's CA (every broker holds its key)."""
    return CertificateAuthority.load_or_create(tmp_path)


@pytest.fixture
def handles(tmp_path: Path) -> Iterator[list[Store]]:
    """Two handles of one store: what two brokers open."""
    opened = [open_store(tmp_path) for _ in range(2)]
    yield opened
    for handle in opened:
        handle.close()


def signer_on(store: Store, ca: CertificateAuthority, clock: FakeClock) -> TokenSigner:
    """A broker's signer, its keys sealed in ``store`` under a key derived from ``ca``."""
    return TokenSigner(
        StoreKeyring(store, ca.derived_key(SIGNING_KEY_PURPOSE)),
        issuer=ISSUER,
        audience=AUDIENCE,
        token_ttl=TTL,
        key_lifetime=LIFETIME,
        clock=clock,
    )


def other_ca(tmp_path: Path) -> CertificateAuthority:
    """Another cluster's CA."""
    (tmp_path / "other").mkdir()
    return CertificateAuthority.load_or_create(tmp_path / "other")


class TestOneKeySetForTheCluster:
    """Whichever broker signs, one key set verifies."""

    def test_same_key_and_set(self, handles: list[Store], ca: CertificateAuthority) -> None:
        """The second broker finds the first one's key: one key, the same set, both verify."""
        clock = FakeClock(time.time())
        first, second = (signer_on(h, ca, clock) for h in handles)
        assert kids(first.jwks()) == kids(second.jwks())
        assert len(kids(first.jwks())) == 1
        token = issue(second)
        assert verify(token, first.jwks())["sub"] == "alice@example.com"

    def test_one_successor_when_both_rotate(
        self, handles: list[Store], ca: CertificateAuthority, clock: FakeClock, start: float
    ) -> None:
        """Both find the next key due at once: one is made, both publish it, both sign with it."""
        first, second = (signer_on(h, ca, clock) for h in handles)
        clock.now = start + PUBLISH_AT
        first.rotate()
        second.rotate()
        assert len(kids(first.jwks())) == 2
        assert kids(first.jwks()) == kids(second.jwks())
        clock.now = start + LIFETIME + TICK
        assert kid_of(issue(first)) == kid_of(issue(second))
        assert kid_of(issue(first)) != kids(first.jwks())[0]


class TestSealed:
    """The store alone signs nothing."""

    def test_no_private_key_in_the_store(
        self, handles: list[Store], ca: CertificateAuthority, clock: FakeClock
    ) -> None:
        """What the store holds is sealed: no PEM, no key bytes in the clear."""
        signer_on(handles[0], ca, clock)
        [(_, _, sealed)] = handles[1].signing_keys()
        assert b"PRIVATE KEY" not in sealed
        assert b"-----" not in sealed

    def test_another_ca_opens_nothing(
        self, handles: list[Store], ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
    ) -> None:
        """A broker of another CA finds no usable key there (it would make its own)."""
        signer_on(handles[0], ca, clock)
        keyring = StoreKeyring(handles[1], other_ca(tmp_path).derived_key(SIGNING_KEY_PURPOSE))
        assert keyring.load() == []

    def test_derived_keys_differ_by_purpose_and_ca(
        self, ca: CertificateAuthority, tmp_path: Path
    ) -> None:
        """The same CA and purpose derive the same key; another purpose or CA another."""
        again = CertificateAuthority.load_or_create(tmp_path)
        other = other_ca(tmp_path)
        assert ca.derived_key("a") == again.derived_key("a")
        assert len({ca.derived_key("a"), ca.derived_key("b"), other.derived_key("a")}) == 3
