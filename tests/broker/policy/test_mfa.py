"""The second factor: ``broker/policy/mfa.py`` real AES-GCM, TOTP and files, fake clock."""

from __future__ import annotations

import base64
import os
import urllib.parse
from typing import TYPE_CHECKING

import pytest

from broker.policy import mfa
from broker.policy.mfa import Challenges, MfaKey, MfaKeyError

if TYPE_CHECKING:
    from pathlib import Path

TENANT = "acme"
USER = "alice@example.com"
#: RFC 6238 appendix B: the SHA-1 seed, and 8-digit codes whose last six digits we show.
RFC_SECRET = b"12345678901234567890"
RFC_VECTORS = [(59, "287082"), (1111111109, "081804"), (1111111111, "050471")]
NOW = 1_700_000_000.0


class FakeClock:
    """Monotonic time that moves only when told."""

    def __init__(self, now: float = 0.0) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> float:
        """The current fake time."""
        return self.now


@pytest.fixture
def key() -> MfaKey:
    """A fresh MFA key, as ``mfa keygen`` makes them."""
    return MfaKey.from_text(mfa.generate_key())


def write_key(path: Path, text: str, mode: int) -> Path:
    """Write a key file with exactly ``mode``."""
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


class TestMfaKey:
    """Sealing TOTP secrets at rest, bound to their tenant and user."""

    def test_round_trip(self, key: MfaKey) -> None:
        """A sealed secret opens to itself for the same tenant and user."""
        secret = mfa.new_secret()
        sealed = key.seal(secret, TENANT, USER)
        assert secret not in sealed
        assert key.open(sealed, TENANT, USER) == secret

    def test_each_seal_is_fresh(self, key: MfaKey) -> None:
        """Sealing the same secret twice gives different bytes (random nonce)."""
        secret = mfa.new_secret()
        assert key.seal(secret, TENANT, USER) != key.seal(secret, TENANT, USER)

    @pytest.mark.parametrize(
        ("tenant", "user"),
        [("globex", USER), (TENANT, "bob@example.com"), (TENANT, "Alice@example.com")],
        ids=["other-tenant", "other-user", "other-spelling"],
    )
    def test_bound_to_tenant_and_user(self, key: MfaKey, tenant: str, user: str) -> None:
        """A sealed secret moved to another tenant or user does not open."""
        sealed = key.seal(mfa.new_secret(), TENANT, USER)
        with pytest.raises(MfaKeyError):
            key.open(sealed, tenant, user)

    def test_other_key_cannot_open(self, key: MfaKey) -> None:
        """A secret sealed under one key does not open under another."""
        sealed = key.seal(mfa.new_secret(), TENANT, USER)
        with pytest.raises(MfaKeyError, match="another key"):
            MfaKey.from_text(mfa.generate_key()).open(sealed, TENANT, USER)

    @pytest.mark.parametrize(
        "damage",
        ["flip-byte", "truncate", "empty"],
        ids=["flipped-byte", "truncated", "empty"],
    )
    def test_tampered_does_not_open(self, key: MfaKey, damage: str) -> None:
        """Changed, cut or empty sealed bytes are refused, never decrypted to garbage."""
        sealed = bytearray(key.seal(mfa.new_secret(), TENANT, USER))
        if damage == "flip-byte":
            sealed[-1] ^= 1
        elif damage == "truncate":
            sealed = sealed[:8]
        else:
            sealed = bytearray()
        with pytest.raises(MfaKeyError):
            key.open(bytes(sealed), TENANT, USER)

    def test_repr_hides_the_key(self) -> None:
        """``repr`` never shows key material."""
        text = mfa.generate_key()
        assert text not in repr(MfaKey.from_text(text))
        assert repr(MfaKey.from_text(text)) == "MfaKey(…)"

    @pytest.mark.parametrize("size", [0, 16, 31, 33], ids=["empty", "aes128", "short", "long"])
    def test_raw_key_is_32_bytes(self, size: int) -> None:
        """Only a 32-byte key is accepted."""
        with pytest.raises(MfaKeyError, match="32 bytes"):
            MfaKey(os.urandom(size))


class TestMfaKeyText:
    """Keys as text: what ``mfa keygen`` prints, with or without padding and newline."""

    def test_generated_key_is_unpadded_urlsafe(self) -> None:
        """A generated key is 43 URL-safe base64 characters for 32 random bytes."""
        text = mfa.generate_key()
        assert len(text) == 43
        assert "=" not in text
        assert len(base64.urlsafe_b64decode(text + "=")) == 32
        assert text != mfa.generate_key()

    def test_same_text_same_key(self) -> None:
        """A key read twice from its text (with a newline) opens what it sealed."""
        text = mfa.generate_key()
        sealed = MfaKey.from_text(text).seal(b"secret", TENANT, USER)
        assert MfaKey.from_text(f"  {text}\n").open(sealed, TENANT, USER) == b"secret"

    def test_padded_form_accepted(self) -> None:
        """The same key with its ``=`` padding is the same key."""
        raw = os.urandom(32)
        sealed = MfaKey(raw).seal(b"secret", TENANT, USER)
        padded = base64.urlsafe_b64encode(raw).decode()
        assert MfaKey.from_text(padded).open(sealed, TENANT, USER) == b"secret"

    @pytest.mark.parametrize(
        "text",
        ["", "a", "short", "not a key at all!", "x" * 44, "é" * 43],
        ids=["empty", "one-char", "short", "prose", "too-long", "non-ascii"],
    )
    def test_malformed(self, text: str) -> None:
        """Anything that is not 32 bytes of base64 is refused with MfaKeyError."""
        with pytest.raises(MfaKeyError):
            MfaKey.from_text(text)


class TestMfaKeyLoad:
    """Loading the operator's key from a file or the environment's text."""

    def test_from_owner_only_file(self, tmp_path: Path) -> None:
        """A 0600 file holding a key is loaded."""
        text = mfa.generate_key()
        path = write_key(tmp_path / "mfa.key", text, 0o600)
        loaded = MfaKey.load(path)
        assert loaded is not None
        sealed = MfaKey.from_text(text).seal(b"secret", TENANT, USER)
        assert loaded.open(sealed, TENANT, USER) == b"secret"

    @pytest.mark.parametrize(
        "mode", [0o640, 0o604, 0o620, 0o644], ids=["group-read", "other-read", "group-write", "644"]
    )
    def test_refuses_file_others_can_use(self, tmp_path: Path, mode: int) -> None:
        """A key file any group or other bit is set on is refused, naming the fix."""
        path = write_key(tmp_path / "mfa.key", mfa.generate_key(), mode)
        with pytest.raises(MfaKeyError, match="chmod 600"):
            MfaKey.load(path)

    def test_file_wins_over_text(self, tmp_path: Path) -> None:
        """With both a file and text, the file's key is the one loaded."""
        file_text, other_text = mfa.generate_key(), mfa.generate_key()
        path = write_key(tmp_path / "mfa.key", file_text, 0o600)
        loaded = MfaKey.load(path, other_text)
        assert loaded is not None
        sealed = MfaKey.from_text(file_text).seal(b"secret", TENANT, USER)
        assert loaded.open(sealed, TENANT, USER) == b"secret"

    def test_from_text(self) -> None:
        """Without a file, the text is the key."""
        text = mfa.generate_key()
        loaded = MfaKey.load(None, text)
        assert loaded is not None
        sealed = MfaKey.from_text(text).seal(b"secret", TENANT, USER)
        assert loaded.open(sealed, TENANT, USER) == b"secret"

    def test_neither_is_none(self) -> None:
        """No file and no text: MFA is simply not configured."""
        assert MfaKey.load(None) is None
        assert MfaKey.load(None, "") is None

    def test_malformed_file(self, tmp_path: Path) -> None:
        """A private file holding something else is refused as malformed."""
        path = write_key(tmp_path / "mfa.key", "not a key", 0o600)
        with pytest.raises(MfaKeyError):
            MfaKey.load(path)


class TestTotpCodes:
    """RFC 6238 codes, six digits, SHA-1, 30-second steps."""

    @pytest.mark.parametrize(
        ("when", "code"), RFC_VECTORS, ids=[str(when) for when, _ in RFC_VECTORS]
    )
    def test_rfc6238_vectors(self, when: int, code: str) -> None:
        """``code_at`` gives the last six digits of RFC 6238's SHA-1 test vectors."""
        assert mfa.code_at(RFC_SECRET, when) == code

    def test_code_constant_within_a_step(self) -> None:
        """Every instant of one 30-second step shows the same code."""
        assert mfa.code_at(RFC_SECRET, 30) == mfa.code_at(RFC_SECRET, 59.9) == "287082"

    def test_new_secret(self) -> None:
        """New secrets are 160 random bits."""
        one, two = mfa.new_secret(), mfa.new_secret()
        assert len(one) == mfa.SECRET_BYTES == 20
        assert one != two


class TestMatchingStep:
    """Which time step a typed code belongs to, within ±1 step, never a used one."""

    @pytest.mark.parametrize(
        ("when", "code"), RFC_VECTORS, ids=[str(when) for when, _ in RFC_VECTORS]
    )
    def test_rfc6238_vectors(self, when: int, code: str) -> None:
        """The RFC's code at its own time matches that time's step."""
        assert mfa.matching_step(RFC_SECRET, code, when, after=0) == when // mfa.TIME_STEP

    @pytest.mark.parametrize(
        ("offset", "matches"),
        [(-2, False), (-1, True), (0, True), (1, True), (2, False)],
        ids=["two-steps-old", "one-step-old", "current", "one-step-ahead", "two-steps-ahead"],
    )
    def test_window(self, offset: int, *, matches: bool) -> None:
        """A code of the neighbouring steps counts; one two steps away does not."""
        step = int(NOW) // mfa.TIME_STEP
        code = mfa.code_at(RFC_SECRET, (step + offset) * mfa.TIME_STEP)
        got = mfa.matching_step(RFC_SECRET, code, NOW, after=0)
        assert got == (step + offset if matches else None)

    @pytest.mark.parametrize(
        ("after", "expected"),
        [(0, 1), (1, None), (2, None)],
        ids=["unused", "used-this-step", "used-later-step"],
    )
    def test_used_steps_never_count_again(self, after: int, expected: int | None) -> None:
        """A step at or before ``after`` was used: its code is refused."""
        assert mfa.matching_step(RFC_SECRET, "287082", 59, after=after) == expected

    def test_neighbour_step_after_use(self) -> None:
        """After step 1 was used, the next step's code still counts within the window."""
        code = mfa.code_at(RFC_SECRET, 60)
        assert mfa.matching_step(RFC_SECRET, code, 59, after=1) == 2

    @pytest.mark.parametrize(
        "code", ["287083", "000000", "94287082", ""], ids=["off-by-one", "zeros", "eight", "empty"]
    )
    def test_wrong_codes(self, code: str) -> None:
        """Codes that are not this secret's for the window match nothing."""
        assert mfa.matching_step(RFC_SECRET, code, 59, after=0) is None

    def test_other_secret(self) -> None:
        """One secret's code does not match another secret."""
        code = mfa.code_at(RFC_SECRET, NOW)
        assert mfa.matching_step(b"a different 20 bytes", code, NOW, after=0) is None


class TestWellFormedCode:
    """Six ASCII digits and nothing else."""

    @pytest.mark.parametrize(
        ("code", "ok"),
        [
            ("287082", True),
            ("000000", True),
            ("28708", False),
            ("2870821", False),
            ("28708a", False),
            (" 28708", False),
            ("\uff12\uff18\uff17\uff10\uff18\uff12", False),
            ("٢٨٧٠٨٢", False),
            ("", False),
        ],
        ids=[
            "six-digits",
            "zeros",
            "five",
            "seven",
            "letter",
            "space",
            "fullwidth-digits",
            "arabic-indic-digits",
            "empty",
        ],
    )
    def test_well_formed(self, code: str, *, ok: bool) -> None:
        """Only six ASCII digits look like a code."""
        assert mfa.well_formed_code(code) is ok


class TestProvisioningUri:
    """What the authenticator app scans."""

    def test_uri(self) -> None:
        """An ``otpauth://totp`` URI with the base32 secret, issuer, SHA1, 6 digits, 30 s."""
        uri = mfa.provisioning_uri(RFC_SECRET, USER, "pta")
        parts = urllib.parse.urlsplit(uri)
        assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
        assert urllib.parse.unquote(parts.path) == f"/pta:{USER}"
        query = dict(urllib.parse.parse_qsl(parts.query))
        assert query == {
            "secret": base64.b32encode(RFC_SECRET).decode().rstrip("="),
            "issuer": "pta",
            "algorithm": "SHA1",
            "digits": "6",
            "period": "30",
        }


def open_challenge(challenges: Challenges, request_id: str = "r1") -> str:
    """Open a challenge for alice from an unfamiliar address."""
    return challenges.open(
        tenant=TENANT,
        user=USER,
        subject="Alice@example.com",
        address="203.0.113.7",
        location="unfamiliar",
        request_id=request_id,
    )


class TestChallenges:
    """Open challenges: unguessable ids, expiry, attempts, bounded memory."""

    def test_open_and_get(self) -> None:
        """An open challenge is found by its id with every field it was opened with."""
        clock = FakeClock(100.0)
        challenges = Challenges(ttl=60.0, attempts=3, clock=clock)
        challenge_id = open_challenge(challenges)
        challenge = challenges.get(challenge_id)
        assert challenge is not None
        assert (challenge.tenant, challenge.user, challenge.subject) == (
            TENANT,
            USER,
            "Alice@example.com",
        )
        assert (challenge.address, challenge.location, challenge.request_id) == (
            "203.0.113.7",
            "unfamiliar",
            "r1",
        )
        assert challenge.expires == 160.0
        assert challenge.attempts_left == 3
        assert len(challenges) == 1

    def test_ids_are_unguessable(self) -> None:
        """Ids are long random URL-safe strings, different every time."""
        challenges = Challenges(clock=FakeClock())
        ids = {open_challenge(challenges, f"r{n}") for n in range(50)}
        assert len(ids) == 50
        assert all(len(i) == 32 and i.replace("-", "").replace("_", "").isalnum() for i in ids)

    def test_unknown_id(self) -> None:
        """An id that was never opened is not found."""
        assert Challenges(clock=FakeClock()).get("nope") is None

    @pytest.mark.parametrize(
        ("elapsed", "found"),
        [(0.0, True), (59.9, True), (60.0, False), (500.0, False)],
        ids=["at-once", "just-before-ttl", "at-ttl", "long-after"],
    )
    def test_expiry(self, elapsed: float, *, found: bool) -> None:
        """A challenge lives ``ttl`` seconds; an expired one is gone for good."""
        clock = FakeClock()
        challenges = Challenges(ttl=60.0, clock=clock)
        challenge_id = open_challenge(challenges)
        clock.now = elapsed
        assert (challenges.get(challenge_id) is not None) is found
        assert len(challenges) == int(found)

    def test_used_up(self) -> None:
        """A challenge with no attempts left is not found, and is dropped."""
        challenges = Challenges(attempts=2, clock=FakeClock())
        challenge_id = open_challenge(challenges)
        challenge = challenges.get(challenge_id)
        assert challenge is not None
        challenge.attempts_left -= 2
        assert challenges.get(challenge_id) is None
        assert len(challenges) == 0

    def test_close(self) -> None:
        """A closed challenge is gone; closing twice is harmless."""
        challenges = Challenges(clock=FakeClock())
        challenge_id = open_challenge(challenges)
        challenges.close(challenge_id)
        challenges.close(challenge_id)
        assert challenges.get(challenge_id) is None

    def test_bounded_drops_expired_first(self) -> None:
        """At the limit, expired challenges make room before any live one is dropped."""
        clock = FakeClock()
        challenges = Challenges(ttl=10.0, limit=2, clock=clock)
        old = open_challenge(challenges, "old")
        clock.now = 5.0
        live = open_challenge(challenges, "live")
        clock.now = 11.0
        new = open_challenge(challenges, "new")
        assert len(challenges) == 2
        assert challenges.get(old) is None
        assert challenges.get(live) is not None
        assert challenges.get(new) is not None

    def test_bounded_drops_oldest_when_all_live(self) -> None:
        """At the limit with every challenge live, the oldest are dropped."""
        challenges = Challenges(limit=3, clock=FakeClock())
        ids = [open_challenge(challenges, f"r{n}") for n in range(5)]
        assert len(challenges) == 3
        assert [challenges.get(i) is not None for i in ids] == [False, False, True, True, True]
