"""Tokens for applications: ``broker/policy/signing.py``, real Ed25519 keys and files, a fake clock.

Tokens are verified as an application would: the key set from :meth:`TokenSigner.jwks`, the
key picked by the token's ``kid``, then :func:`jwt.decode` with the issuer and audience. PyJWT
checks ``exp``/``nbf``/``iat`` against the real time, so the rotation tests put the fake
clock's timeline around the real now: every token they decode is valid *now*.
"""

from __future__ import annotations

import json
import stat
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.policy import signing, signing_keys
from broker.policy.signing import TokenSigner

if TYPE_CHECKING:
    from pathlib import Path

ISSUER = "https://broker.example.com"
AUDIENCE = "app.example.com"
LIFETIME = 300.0
TTL = 100.0
#: Where the next key is made and published, and where it starts signing.
PUBLISH_AT = LIFETIME * signing.PUBLISH_NEXT_AT
#: More than ROTATION_CHECK: steps this far apart always look at rotation again.
TICK = signing.ROTATION_CHECK + 0.5


class FakeClock:
    """Wall-clock time that moves only when told."""

    def __init__(self, now: float) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> float:
        """The current fake time."""
        return self.now


def make_signer(data_dir: Path, clock: FakeClock, *, audience: str = AUDIENCE) -> TokenSigner:
    """A signer with short lifetimes on the fake clock."""
    return TokenSigner(
        data_dir,
        issuer=ISSUER,
        audience=audience,
        token_ttl=TTL,
        key_lifetime=LIFETIME,
        clock=clock,
    )


def issue(signer: TokenSigner, jti: str = "req-1") -> str:
    """Issue alice's token."""
    return signer.issue(subject="alice@example.com", tenant="acme", methods=["pwd"], jti=jti).token


def kid_of(token: str) -> str:
    """The key id a token names in its header."""
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def kids(jwks: str) -> list[str]:
    """The key ids of a published key set, in order."""
    return [key["kid"] for key in json.loads(jwks)["keys"]]


def verify(token: str, jwks: str, *, audience: str | None = AUDIENCE) -> dict[str, Any]:
    """Verify ``token`` as an application does, with the key set ``jwks``."""
    key = jwt.PyJWKSet.from_json(jwks)[kid_of(token)]
    return jwt.decode(token, key, algorithms=["EdDSA"], issuer=ISSUER, audience=audience)


def key_files(data_dir: Path) -> list[str]:
    """The key ids of the key files on disk, sorted."""
    return sorted(p.stem for p in (data_dir / signing_keys.SIGNING_DIR).glob("*.pem"))


def other_key_set(kid: str) -> str:
    """A key set holding another Ed25519 key under ``kid``."""
    jwk = jwt.algorithms.OKPAlgorithm.to_jwk(
        Ed25519PrivateKey.generate().public_key(), as_dict=True
    )
    return json.dumps({"keys": [{**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}]})


@pytest.fixture
def start() -> float:
    """A fake start time: the first key is this old when the rotation tests verify."""
    return time.time() - LIFETIME - 50


@pytest.fixture
def clock(start: float) -> FakeClock:
    """A fake clock at :func:`start`."""
    return FakeClock(start)


class TestTokenSignerSetup:
    """The first key, its file, and the settings refused."""

    @pytest.mark.parametrize(
        ("token_ttl", "key_lifetime"),
        [(0.0, LIFETIME), (-1.0, LIFETIME), (TTL, 0.0), (LIFETIME + 1, LIFETIME)],
        ids=["zero-ttl", "negative-ttl", "zero-lifetime", "ttl-above-lifetime"],
    )
    def test_invalid_lifetimes(self, tmp_path: Path, token_ttl: float, key_lifetime: float) -> None:
        """A token must be short-lived and not outlive its key's lifetime."""
        with pytest.raises(ValueError, match="lifetime"):
            TokenSigner(tmp_path, token_ttl=token_ttl, key_lifetime=key_lifetime)

    def test_first_key_made_and_published(self, tmp_path: Path, clock: FakeClock) -> None:
        """A new signer makes one key file (0600 in a 0700 directory) and publishes its key."""
        signer = make_signer(tmp_path, clock)
        directory = tmp_path / signing_keys.SIGNING_DIR
        [path] = directory.glob("*.pem")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert kids(signer.jwks()) == [path.stem]
        assert path.stem.startswith(f"{int(clock.now * 1000)}-")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)

    def test_key_set_is_public_only(self, tmp_path: Path, clock: FakeClock) -> None:
        """The published key is an Ed25519 public JWK for signatures; no private part."""
        [jwk] = json.loads(make_signer(tmp_path, clock).jwks())["keys"]
        assert jwk["kty"] == "OKP"
        assert jwk["crv"] == "Ed25519"
        assert jwk["alg"] == "EdDSA"
        assert jwk["use"] == "sig"
        assert "d" not in jwk

    def test_reload_keeps_the_same_kids(self, tmp_path: Path, clock: FakeClock) -> None:
        """A restarted signer loads the key files and makes no new key."""
        first = make_signer(tmp_path, clock)
        clock.now += TICK
        again = make_signer(tmp_path, clock)
        assert kids(again.jwks()) == kids(first.jwks()) == key_files(tmp_path)
        assert kid_of(issue(again)) == kid_of(issue(first))

    def test_foreign_files_ignored(self, tmp_path: Path, clock: FakeClock) -> None:
        """Files that are not ``<ms>-<id>.pem`` Ed25519 keys are neither loaded nor deleted."""
        directory = tmp_path / signing_keys.SIGNING_DIR
        directory.mkdir()
        ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (directory / f"{int(clock.now * 1000)}-ec.pem").write_bytes(ec_pem)
        (directory / "notes.pem").write_text("not a key")
        (directory / "README.txt").write_text("keys live here")
        signer = make_signer(tmp_path, clock)
        [kid] = kids(signer.jwks())
        assert kid != f"{int(clock.now * 1000)}-ec"
        assert (directory / "notes.pem").exists()
        assert (directory / "README.txt").exists()


class TestTokenSignerIssue:
    """What a token says, and who can verify it."""

    def test_claims(self, tmp_path: Path) -> None:
        """A token carries iss, sub, tenant, amr, iat, nbf, exp, jti and aud, and verifies."""
        now = time.time()
        signer = make_signer(tmp_path, FakeClock(now))
        issued = signer.issue(
            subject="Alice@example.com", tenant="acme", methods=["pwd", "otp"], jti="req-7"
        )
        claims = verify(issued.token, signer.jwks())
        assert claims == {
            "iss": ISSUER,
            "sub": "Alice@example.com",
            "tenant": "acme",
            "amr": ["pwd", "otp"],
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + TTL),
            "jti": "req-7",
            "aud": AUDIENCE,
        }
        assert issued.expires_at == claims["exp"]
        header = jwt.get_unverified_header(issued.token)
        assert header["alg"] == "EdDSA"
        assert header["kid"] == kids(signer.jwks())[0]

    def test_no_audience_no_aud_claim(self, tmp_path: Path) -> None:
        """Without a configured audience, tokens have no ``aud``."""
        signer = make_signer(tmp_path, FakeClock(time.time()), audience="")
        claims = verify(issue(signer), signer.jwks(), audience=None)
        assert "aud" not in claims

    def test_wrong_audience_or_issuer_refused(self, tmp_path: Path) -> None:
        """An application expecting another audience or issuer refuses the token."""
        signer = make_signer(tmp_path, FakeClock(time.time()))
        token = issue(signer)
        key = jwt.PyJWKSet.from_json(signer.jwks())[kid_of(token)]
        with pytest.raises(jwt.InvalidAudienceError):
            jwt.decode(token, key, algorithms=["EdDSA"], issuer=ISSUER, audience="other-app")
        with pytest.raises(jwt.InvalidIssuerError):
            jwt.decode(token, key, algorithms=["EdDSA"], issuer="someone-else", audience=AUDIENCE)

    def test_expired_token_refused(self, tmp_path: Path) -> None:
        """A token issued more than its lifetime ago fails with ExpiredSignatureError."""
        signer = make_signer(tmp_path, FakeClock(time.time() - 3 * TTL))
        token = issue(signer)
        with pytest.raises(jwt.ExpiredSignatureError):
            verify(token, signer.jwks())

    def test_other_key_with_same_kid_refused(self, tmp_path: Path) -> None:
        """A token checked against another Ed25519 key under the same kid fails."""
        signer = make_signer(tmp_path, FakeClock(time.time()))
        token = issue(signer)
        with pytest.raises(jwt.InvalidSignatureError):
            verify(token, other_key_set(kid_of(token)))

    def test_forged_token_with_our_kid_refused(self, tmp_path: Path) -> None:
        """A token signed by another key but naming the broker's kid fails against its set."""
        now = int(time.time())
        signer = make_signer(tmp_path, FakeClock(now))
        kid = kid_of(issue(signer))
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "mallory@example.com",
            "tenant": "acme",
            "amr": ["pwd"],
            "iat": now,
            "nbf": now,
            "exp": now + 60,
            "jti": "x",
            "aud": AUDIENCE,
        }
        forged = jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
        )
        with pytest.raises(jwt.InvalidSignatureError):
            verify(forged, signer.jwks())

    def test_unique_per_request(self, tmp_path: Path) -> None:
        """The jti is the sign-in's request id, so two sign-ins give two different tokens."""
        signer = make_signer(tmp_path, FakeClock(time.time()))
        one, two = issue(signer, "req-1"), issue(signer, "req-2")
        assert one != two
        assert verify(two, signer.jwks())["jti"] == "req-2"


class TestTokenSignerRotation:
    """The next key is published early; the old one stays until its tokens have expired."""

    def test_nothing_new_before_the_publish_point(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """Until ``PUBLISH_NEXT_AT`` of its life, the first key is the only one."""
        signer = make_signer(tmp_path, clock)
        first = key_files(tmp_path)
        clock.now = start + PUBLISH_AT - 1
        assert kids(signer.jwks()) == first
        assert key_files(tmp_path) == first

    def test_next_key_made_at_the_publish_point(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """At ``PUBLISH_NEXT_AT`` the next key's file exists, dated when its predecessor ends."""
        signer = make_signer(tmp_path, clock)
        [first] = key_files(tmp_path)
        clock.now = start + PUBLISH_AT
        signer.rotate()
        assert len(key_files(tmp_path)) == 2
        [following] = [k for k in key_files(tmp_path) if k != first]
        assert following.startswith(f"{int((start + LIFETIME) * 1000)}-")
        assert kid_of(issue(signer)) == first

    def test_next_key_published_before_it_signs(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """The key set fetched at ``PUBLISH_NEXT_AT`` verifies tokens of the next key."""
        signer = make_signer(tmp_path, clock)
        [first] = key_files(tmp_path)
        clock.now = start + PUBLISH_AT
        published = signer.jwks()
        assert sorted(kids(published)) == key_files(tmp_path)
        clock.now = start + LIFETIME + TICK
        token = issue(signer)
        assert kid_of(token) != first
        assert verify(token, published)["sub"] == "alice@example.com"

    def test_next_key_signs_from_its_start(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """From its ``not_before`` on, the next key signs, even before rotation looks again."""
        signer = make_signer(tmp_path, clock)
        [first] = key_files(tmp_path)
        clock.now = start + PUBLISH_AT
        signer.rotate()
        [following] = [k for k in key_files(tmp_path) if k != first]
        clock.now = start + LIFETIME - 0.5
        assert kid_of(issue(signer)) == first
        clock.now = start + LIFETIME
        assert kid_of(issue(signer)) == following

    def test_rotation_is_throttled(self, tmp_path: Path, clock: FakeClock, start: float) -> None:
        """Rotation is looked at no more than once per ``ROTATION_CHECK``."""
        signer = make_signer(tmp_path, clock)
        clock.now = start + PUBLISH_AT - 0.4
        signer.rotate()
        clock.now = start + PUBLISH_AT + 0.1
        signer.rotate()
        assert len(key_files(tmp_path)) == 1
        clock.now = start + PUBLISH_AT - 0.4 + signing.ROTATION_CHECK
        signer.rotate()
        assert len(key_files(tmp_path)) == 2

    def test_old_tokens_verify_after_rotation_until_they_expire(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """A token of the old key verifies with the set published after the rotation."""
        signer = make_signer(tmp_path, clock)
        [first] = key_files(tmp_path)
        clock.now = start + LIFETIME - 10
        before = issue(signer)
        assert kid_of(before) == first
        clock.now = start + LIFETIME + TICK
        assert kid_of(issue(signer)) != first
        clock.now = start + LIFETIME + TTL - 1
        assert verify(before, signer.jwks())["sub"] == "alice@example.com"

    def test_old_key_dropped_after_its_last_token_expired(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """Once no token of the old key can be valid, it is unpublished and its file deleted."""
        signer = make_signer(tmp_path, clock)
        [first] = key_files(tmp_path)
        clock.now = start + LIFETIME - TICK
        last = signer.issue(subject="alice@example.com", tenant="acme", methods=["pwd"], jti="x")
        clock.now = start + LIFETIME + TTL
        assert first in kids(signer.jwks())
        clock.now = start + LIFETIME + TTL + TICK
        published = signer.jwks()
        assert last.expires_at < clock.now
        assert first not in kids(published)
        assert first not in key_files(tmp_path)
        assert kids(published) == key_files(tmp_path)
        with pytest.raises(KeyError):
            jwt.PyJWKSet.from_json(published)[first]

    def test_restart_publishes_every_kept_key(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """A signer restarted during an overlap publishes the same keys the files hold."""
        signer = make_signer(tmp_path, clock)
        clock.now = start + LIFETIME + TICK
        token = issue(signer)
        restarted = make_signer(tmp_path, clock)
        assert sorted(kids(restarted.jwks())) == key_files(tmp_path)
        assert len(key_files(tmp_path)) == 2
        assert kid_of(issue(restarted)) == kid_of(token)
        assert verify(token, restarted.jwks())["jti"] == "req-1"

    def test_restart_after_long_downtime(
        self, tmp_path: Path, clock: FakeClock, start: float
    ) -> None:
        """A signer started after its keys' lives ended makes a fresh key and signs with it."""
        make_signer(tmp_path, clock)
        [old] = key_files(tmp_path)
        clock.now = start + 10 * LIFETIME
        signer = make_signer(tmp_path, clock)
        token = issue(signer)
        assert kid_of(token) != old
        assert kid_of(token).startswith(f"{int(clock.now * 1000)}-")
        assert kid_of(token) in kids(signer.jwks())
