"""The broker's sign-in policy end to end: real broker, agent and slapd, over real mTLS.

Smart lockout (threshold, growth, reset, repeats, familiar networks, outages, restarts, the
directory's own count), MFA step-up with TOTP, and the tokens applications verify.
"""

from __future__ import annotations

import base64
import contextlib
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import jwt
import ldap3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.policy import mfa
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tests.secrets_registry import known, secret
from tests.support import AgentProcess, BrokerProcess, signin_cli, wait_for
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
DOMAIN = "guard.example"
OFFICE = "10.20.0.0/16"
OFFICE_IP = "10.20.1.5"
ATTACKER_IP = "198.51.100.66"
THRESHOLD = 3
DIRECTORY_THRESHOLD = 5  # tooling/slapd.py's default password policy: pwdMaxFailure
TOKEN_TTL = 2.0
USERS = {
    name: secret(f"{name.capitalize()}-Pw-9!")
    for name in (
        "victim",
        "grower",
        "resetter",
        "repeater",
        "traveller",
        "outage",
        "restarted",
        "mfa-always",
        "mfa-none",
        "mfa-where",
        "mfa-cli",
        "holder",
        "spelled",
        "twice",
        "spaced",
        "hasty",
        "mfa-change",
    )
}


@dataclass
class Guard:
    """The module's broker (replaced when a test restarts it), agent and directory."""

    broker: BrokerProcess
    agent: AgentProcess
    slapd: Slapd
    ports: tuple[str, ...]
    key_file: Path

    def serve_flags(self) -> tuple[str, ...]:
        """How the broker is started (again)."""
        return (
            *self.ports,
            *("--trusted-proxy", "127.0.0.1/32", "--mfa-key-file", str(self.key_file)),
            *("--token-ttl", f"{TOKEN_TTL}s", "--mfa-challenge-ttl", "3s"),
        )

    def set_policy(self, *flags: str) -> None:
        """Change the tenant's policy and wait until the serving broker applied it."""
        seen = len(self.broker.log_events("policy.changed"))
        self.broker.cli("tenant", "policy", "guard", *flags)
        wait_for(
            lambda: len(self.broker.log_events("policy.changed")) > seen,
            what="the broker to apply the policy",
        )

    def sign_in(self, uid: str, password: str, ip: str = ATTACKER_IP) -> signin_pb2.SignInResponse:
        """One sign-in of ``uid`` from ``ip`` (believed: the tests' caller is a trusted proxy)."""
        return self.broker.sign_in(f"{uid}@{DOMAIN}", password, client_ip=ip)

    def failures_in_directory(self, uid: str) -> int:
        """How many wrong passwords slapd itself has counted for ``uid`` (ppolicy)."""
        server = ldap3.Server(self.slapd.url, get_info=ldap3.NONE)
        with ldap3.Connection(
            server, self.slapd.admin_dn, self.slapd.admin_password, auto_bind=True
        ) as conn:
            conn.search(
                self.slapd.user_dn(uid),
                "(objectClass=*)",
                ldap3.BASE,
                attributes=["pwdFailureTime"],
            )
            return len(conn.entries[0].entry_attributes_as_dict.get("pwdFailureTime", []))


@pytest.fixture(scope="module")
def guard(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    """Tenant ``guard``: threshold 3 (below slapd's 5), the office network familiar."""
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
    # The key file lives outside the run directory: everything in that is scanned for secrets.
    key_file = tmp_path_factory.mktemp("keys") / "guard-mfa.key"
    made = BrokerProcess.cli_without_data("mfa", "keygen", str(key_file))
    assert made.returncode == 0, made.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    known(key_file.read_text().strip())
    ports = (
        *("--listen", f"127.0.0.1:{free_port()}"),
        *("--agent-listen", f"127.0.0.1:{free_port()}"),
    )
    with Slapd(users=users) as slapd:
        guard = Guard(None, None, slapd, ports, key_file)  # type: ignore[arg-type]
        guard.broker = BrokerProcess.start(run_dir, "broker-guard", *guard.serve_flags())
        guard.broker.add_tenant("guard", DOMAIN)
        guard.broker.cli(
            "tenant", "policy", "guard", "--lockout-threshold", str(THRESHOLD),
            "--familiar-network", OFFICE,
        )  # fmt: skip
        guard.agent = AgentProcess.start(guard.broker, slapd, "guard", "agent-guard")
        yield guard
        guard.agent.stop()
        guard.broker.stop()


def _outcomes(replies: list[signin_pb2.SignInResponse]) -> list[str]:
    return [Outcome.Name(r.outcome) for r in replies]


class TestSmartLockout:
    """Checked before anything is sent to an agent."""

    def test_brute_force_stops_at_the_threshold(self, guard: Guard) -> None:
        """100 guesses: 3 reach the directory (below its own 5), 97 are refused by the broker."""
        replies = [guard.sign_in("victim", secret("guess")) for _ in range(100)]
        outcomes = _outcomes(replies)
        assert outcomes[:THRESHOLD] == ["INVALID_CREDENTIALS"] * THRESHOLD
        assert outcomes[THRESHOLD:] == ["LOCKED_BY_POLICY"] * (100 - THRESHOLD)
        assert all(0 < r.retry_after_seconds <= 60 for r in replies[THRESHOLD:])
        reached = guard.failures_in_directory("victim")
        print(f"\nbrute force: 100 guesses, {reached} reached the directory")  # noqa: T201
        assert reached == THRESHOLD < DIRECTORY_THRESHOLD
        # The user, from the office, is neither locked by the broker nor by the directory.
        assert guard.sign_in("victim", USERS["victim"], ip=OFFICE_IP).outcome == Outcome.SUCCESS
        refused = [
            e
            for e in guard.broker.log_events("signin.completed")
            if e.get("user") == f"victim@{DOMAIN}" and e.get("decided_by") == "lockout"
        ]
        assert len(refused) == 100 - THRESHOLD
        assert all("agent_id" not in e for e in refused)

    def test_lockout_grows_and_the_directory_is_never_locked(self, guard: Guard) -> None:
        """Locks of 1 s, 2 s, then the 3 s cap; then the guard stops guesses short of slapd's.

        One guess reaches the directory each time a lock runs out; one more would leave slapd a
        single failure from locking, so the broker sends none.
        """
        guard.set_policy(
            *("--lockout-threshold", "1", "--lockout-duration", "1s", "--lockout-max", "3s")
        )
        try:
            waits = []
            for _ in range(3):
                reply = guard.sign_in("grower", secret("guess"))
                assert reply.outcome == Outcome.INVALID_CREDENTIALS
                locked = guard.sign_in("grower", secret("more"))
                assert locked.outcome == Outcome.LOCKED_BY_POLICY
                waits.append(locked.retry_after_seconds)
                time.sleep(locked.retry_after_seconds + 0.2)
            assert waits == [1, 2, 3]
            guarded = guard.sign_in("grower", secret("guess-after"))
            assert guarded.outcome == Outcome.LOCKED_BY_POLICY
            assert "directory" in guarded.message
            # Operators see the guard's refusal and its end, not "locked for 0 s".
            listed = guard.broker.cli("lockout", "list", "--tenant", "guard").stdout.splitlines()
            rows = [r for r in listed if r.startswith("grower@") and "\tdirectory\t" in r]
            assert len(rows) == 1, listed
            row = rows[0]
            assert f"which locks at {DIRECTORY_THRESHOLD}" in row
            assert "guard refuses from unfamiliar places until " in row
            shown = guard.broker.cli("tenant", "show", "guard").stdout
            (held,) = [line for line in shown.splitlines() if "held back by the directory" in line]
            assert "grower@" in held
            assert "from unfamiliar places, until " in held
            # Unfamiliar places stop at slapd's 5 - 2; the office keeps the last try.
            assert guard.failures_in_directory("grower") == DIRECTORY_THRESHOLD - 2
            office = guard.sign_in("grower", USERS["grower"], ip=OFFICE_IP)
            assert office.outcome == Outcome.SUCCESS
        finally:
            guard.set_policy(
                *("--lockout-threshold", str(THRESHOLD), "--lockout-duration", "60s"),
                *("--lockout-max", "1h"),
            )

    def test_success_resets_the_count(self, guard: Guard) -> None:
        """Failures short of the threshold are forgotten by a right password."""
        for round_ in range(3):
            for _ in range(THRESHOLD - 1):
                assert guard.sign_in("resetter", secret(f"r{round_}")).outcome == (
                    Outcome.INVALID_CREDENTIALS
                )
            assert guard.sign_in("resetter", USERS["resetter"]).outcome == Outcome.SUCCESS

    def test_the_same_wrong_password_is_not_counted_again(self, guard: Guard) -> None:
        """Ten times one typo is one failure, at the broker and at the directory."""
        typo = secret("Repeater-Pw-9?")
        replies = [guard.sign_in("repeater", typo) for _ in range(10)]
        assert _outcomes(replies) == ["INVALID_CREDENTIALS"] * 10
        assert guard.failures_in_directory("repeater") == 1
        repeats = [
            e
            for e in guard.broker.log_events("signin.completed")
            if e.get("user") == f"repeater@{DOMAIN}" and e.get("decided_by") == "repeat"
        ]
        assert len(repeats) == 9
        assert guard.sign_in("repeater", USERS["repeater"]).outcome == Outcome.SUCCESS

    def test_a_network_signed_in_from_becomes_familiar(self, guard: Guard) -> None:
        """Guesses from elsewhere lock only elsewhere: home, where the user signed in, works."""
        home = "203.0.113.40"
        assert guard.sign_in("traveller", USERS["traveller"], ip=home).outcome == Outcome.SUCCESS
        for _ in range(THRESHOLD):
            guard.sign_in("traveller", secret("guess"))
        assert guard.sign_in("traveller", secret("guess-x")).outcome == Outcome.LOCKED_BY_POLICY
        neighbour = "203.0.113.41"  # The same /24.
        reply = guard.sign_in("traveller", USERS["traveller"], ip=neighbour)
        assert reply.outcome == Outcome.SUCCESS

    def test_directory_outages_never_count(self, guard: Guard) -> None:
        """Sign-ins while the directory is down get UNAVAILABLE and move no counter."""
        guard.slapd.pause()
        try:
            for _ in range(THRESHOLD + 2):
                with pytest.raises(grpc.RpcError) as raised:
                    guard.sign_in("outage", secret("guess"))
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            guard.slapd.resume()
        wait_for(
            lambda: _answers(guard, "outage", USERS["outage"]) == "SUCCESS",
            what="the directory to answer again",
        )
        for _ in range(THRESHOLD - 1):
            assert guard.sign_in("outage", secret("after")).outcome == Outcome.INVALID_CREDENTIALS
        listed = guard.broker.cli("lockout", "list", "--tenant", "guard").stdout
        # Keyed on the directory account: the agent searches uid, the part before the @.
        account = f"outage@[{guard.slapd.base_dn}]"
        assert f"{account}\tunfamiliar\tfailures {THRESHOLD - 1}" in listed

    def test_lockouts_survive_a_restart_and_an_admin_clears_them(self, guard: Guard) -> None:
        """The counters are in the store; ``pta-broker lockout clear`` unlocks within a tick."""
        for _ in range(THRESHOLD):
            guard.sign_in("restarted", secret("guess"), ip=OFFICE_IP)
        locked = guard.sign_in("restarted", secret("x"), ip=OFFICE_IP)
        assert locked.outcome == Outcome.LOCKED_BY_POLICY
        connected = len(guard.broker.log_events("agent.connected"))
        guard.broker.stop()
        guard.broker = BrokerProcess.start(
            guard.broker.data_dir.parent, "broker-guard", *guard.serve_flags()
        )
        reply = guard.sign_in("restarted", USERS["restarted"], ip=OFFICE_IP)
        assert reply.outcome == Outcome.LOCKED_BY_POLICY
        shown = guard.broker.cli("tenant", "show", "guard").stdout
        # Still the account's key before the agent is back: the broker kept what it said.
        assert f"restarted@[{guard.slapd.base_dn}]" in shown
        cleared = len(guard.broker.log_events("lockout.cleared"))
        guard.broker.cli("lockout", "clear", "--tenant", "guard", f"Restarted@{DOMAIN}")
        wait_for(lambda: len(guard.broker.log_events("lockout.cleared")) > cleared)
        wait_for(lambda: len(guard.broker.log_events("agent.connected")) > connected, timeout=40)
        reply = guard.sign_in("restarted", USERS["restarted"], ip=OFFICE_IP)
        assert reply.outcome == Outcome.SUCCESS

    def test_the_directory_threshold_is_shown_and_a_late_cloud_one_warned(
        self, guard: Guard
    ) -> None:
        """The agent reports slapd's 5; the broker warns once its own threshold is not lower."""
        wait_for(
            lambda: "locks after 5" in guard.broker.cli("tenant", "show", "guard").stdout,
            what="the agent's report of the directory's threshold",
        )
        assert "WARNING" not in guard.broker.cli("tenant", "show", "guard").stdout
        guard.set_policy("--lockout-threshold", str(DIRECTORY_THRESHOLD))
        try:
            shown = guard.broker.cli("tenant", "show", "guard").stdout
            assert "WARNING: set the broker's threshold below the directory's 5" in shown
            warned = guard.broker.log_events("policy.threshold_not_below_directory")
            assert any(e.get("tenant") == "guard" for e in warned)
        finally:
            guard.set_policy("--lockout-threshold", str(THRESHOLD))

    def test_spellings_of_a_name_share_one_counter(self, guard: Guard) -> None:
        """``Spelled``, ``SPELLED``, ``spelled``: changing case buys no fresh threshold."""
        for name in ("Spelled", "SPELLED", "spelled"):
            assert guard.sign_in(name, secret("guess")).outcome == Outcome.INVALID_CREDENTIALS
        assert guard.sign_in("sPeLlEd", secret("guess")).outcome == Outcome.LOCKED_BY_POLICY

    def test_spaces_and_invisible_characters_buy_no_fresh_threshold(self, guard: Guard) -> None:
        """Spellings slapd matches as one name (spaces, case, zero-width) share one counter."""
        for name in (" spaced", "spaced  ", "  SPACED "):
            assert guard.sign_in(name, secret("guess")).outcome == Outcome.INVALID_CREDENTIALS
        late = secret("guess-x")
        for name in ("spaced", "spa\u200bced", "Spaced"):
            assert guard.sign_in(name, late).outcome == Outcome.LOCKED_BY_POLICY
        assert guard.failures_in_directory("spaced") == THRESHOLD

    def test_callers_that_give_up_early_still_have_their_guesses_counted(
        self, guard: Guard
    ) -> None:
        """Guesses whose caller timed out are counted by what the agent found.

        The agent may bind after the caller's deadline; the directory counts that, so the
        broker must too, and must not let more through meanwhile.
        """
        for n in range(10):
            with contextlib.suppress(grpc.RpcError):
                guard.broker.sign_in(
                    f"hasty@{DOMAIN}", secret(f"guess-{n}"), timeout=0.005, client_ip=ATTACKER_IP
                )
        # Each poll a new wrong password (a repeat would be answered uncounted): had the
        # hasty guesses gone uncounted, these would take the directory past the threshold
        # before the broker locked. How many hasty ones reached the agent depends on the
        # machine's speed (a deadline may pass before dispatch); the bound does not.
        late = (secret(f"late-{n}") for n in range(4 * THRESHOLD))
        wait_for(
            lambda: guard.sign_in("hasty", next(late)).outcome == Outcome.LOCKED_BY_POLICY,
            what="the late answers to be counted",
        )
        assert guard.failures_in_directory("hasty") <= THRESHOLD

    def test_a_success_resets_only_its_own_kind_of_location(self, guard: Guard) -> None:
        """The user signing in at the office does not hand the attacker fresh guesses."""
        for _ in range(THRESHOLD):
            guard.sign_in("twice", secret("guess"))
        assert guard.sign_in("twice", USERS["twice"], ip=OFFICE_IP).outcome == Outcome.SUCCESS
        assert guard.sign_in("twice", secret("guess-x")).outcome == Outcome.LOCKED_BY_POLICY


def _answers(guard: Guard, uid: str, password: str) -> str:
    try:
        return str(Outcome.Name(guard.sign_in(uid, password, ip=OFFICE_IP).outcome))
    except grpc.RpcError as error:
        return str(error.code().name)


def _enrol(guard: Guard, uid: str) -> bytes:
    """Enrol ``uid``'s authenticator with the CLI; return the secret its URI carries."""
    enrolled = guard.broker.cli(
        "mfa", "enroll", "--tenant", "guard", f"{uid}@{DOMAIN}", "--mfa-key-file",
        str(guard.key_file),
    )  # fmt: skip
    uri = urllib.parse.urlparse(enrolled.stdout.strip())
    assert uri.scheme == "otpauth"
    totp = known(urllib.parse.parse_qs(uri.query)["secret"][0])
    return base64.b32decode(totp + "=" * (-len(totp) % 8))


def _complete(guard: Guard, challenge: str, code: str) -> signin_pb2.SignInResponse:
    known(challenge)
    known(code)
    with guard.broker.channel() as channel:
        reply: signin_pb2.SignInResponse = signin_pb2_grpc.SignInServiceStub(channel).CompleteMfa(
            signin_pb2.CompleteMfaRequest(challenge_id=challenge, code=code), timeout=10
        )
        return reply


def _wrong_codes(totp: bytes, count: int = 1) -> list[str]:
    """Different six-digit codes that no step near now accepts: wrong, never by luck right."""
    now = time.time()
    right = {mfa.code_at(totp, now + step * mfa.TIME_STEP) for step in range(-3, 4)}
    candidates = (f"{n:06d}" for n in range(111_111, 1_000_000, 111_111))
    return [code for code in candidates if code not in right][:count]


def _verify(guard: Guard, token: str) -> dict[str, object]:
    """Verify a token as an application does: with the published key set."""
    known(token)  # A bearer credential: no log or file may hold it either.
    with guard.broker.channel() as channel:
        keys = signin_pb2_grpc.SignInServiceStub(channel).GetSigningKeys(
            signin_pb2.GetSigningKeysRequest(), timeout=10
        )
    key = jwt.PyJWKSet.from_json(keys.jwks_json)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, object] = jwt.decode(
        token, key, algorithms=["EdDSA"], issuer=keys.issuer, options={"require": ["exp"]}
    )
    return claims


class TestMfa:
    """A right password is stepped up when the tenant's policy says so."""

    @pytest.fixture
    def always(self, guard: Guard) -> Iterator[None]:
        """The tenant wants a second factor on every sign-in, for one test."""
        guard.set_policy("--mfa", "always")
        yield
        guard.set_policy("--mfa", "never")

    @pytest.mark.usefixtures("always")
    def test_good_code_then_wrong_reused_and_expired(self, guard: Guard) -> None:
        """A good code signs in (amr pwd+otp); a wrong or used one does not; challenges expire."""
        totp = _enrol(guard, "mfa-always")
        first = guard.sign_in("mfa-always", USERS["mfa-always"])
        assert first.outcome == Outcome.MFA_REQUIRED
        assert first.mfa_challenge_id
        assert not first.token
        assert 0 < first.mfa_expires_in_seconds <= 3
        wrong = _complete(guard, first.mfa_challenge_id, _wrong_codes(totp)[0])
        assert wrong.outcome == Outcome.INVALID_CREDENTIALS
        code = mfa.code_at(totp, time.time())
        good = _complete(guard, first.mfa_challenge_id, code)
        assert good.outcome == Outcome.SUCCESS, good.message
        assert _verify(guard, good.token)["amr"] == ["pwd", "otp"]
        assert good.request_id == first.request_id

        second = guard.sign_in("mfa-always", USERS["mfa-always"])
        reused = _complete(guard, second.mfa_challenge_id, code)
        assert reused.outcome == Outcome.INVALID_CREDENTIALS
        with pytest.raises(grpc.RpcError) as answered:
            _complete(guard, first.mfa_challenge_id, mfa.code_at(totp, time.time() + 30))
        assert answered.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        third = guard.sign_in("mfa-always", USERS["mfa-always"])
        time.sleep(3.2)
        with pytest.raises(grpc.RpcError) as expired:
            _complete(guard, third.mfa_challenge_id, mfa.code_at(totp, time.time() + 30))
        assert expired.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    @pytest.mark.usefixtures("always")
    def test_wrong_codes_count_toward_lockout(self, guard: Guard) -> None:
        """Three wrong codes: the challenge is used up and the user locked like three guesses."""
        totp = _enrol(guard, "holder")
        challenge = guard.sign_in("holder", USERS["holder"]).mfa_challenge_id
        answers = [_complete(guard, challenge, code).outcome for code in _wrong_codes(totp, 3)]
        assert answers[-1] == Outcome.LOCKED_BY_POLICY
        assert guard.sign_in("holder", USERS["holder"]).outcome == Outcome.LOCKED_BY_POLICY
        guard.broker.cli("lockout", "clear", "--tenant", "guard", f"holder@{DOMAIN}")

    @pytest.mark.usefixtures("always")
    def test_no_authenticator_means_no_sign_in(self, guard: Guard) -> None:
        """Required and not enrolled: MFA_NOT_ENROLLED, no token."""
        reply = guard.sign_in("mfa-none", USERS["mfa-none"])
        assert reply.outcome == Outcome.MFA_NOT_ENROLLED
        assert not reply.token

    def test_only_unfamiliar_locations_are_stepped_up(self, guard: Guard) -> None:
        """Policy ``unfamiliar``: the office signs in with a password, elsewhere needs a code."""
        totp = _enrol(guard, "mfa-where")
        guard.set_policy("--mfa", "unfamiliar")
        try:
            office = guard.sign_in("mfa-where", USERS["mfa-where"], ip=OFFICE_IP)
            assert office.outcome == Outcome.SUCCESS
            assert _verify(guard, office.token)["amr"] == ["pwd"]
            away = guard.sign_in("mfa-where", USERS["mfa-where"], ip="192.0.2.77")
            assert away.outcome == Outcome.MFA_REQUIRED
            done = _complete(guard, away.mfa_challenge_id, mfa.code_at(totp, time.time()))
            assert done.outcome == Outcome.SUCCESS
            # Once the code was right there, that network is familiar.
            again = guard.sign_in("mfa-where", USERS["mfa-where"], ip="192.0.2.78")
            assert again.outcome == Outcome.SUCCESS
        finally:
            guard.set_policy("--mfa", "never")

    @pytest.mark.usefixtures("always")
    def test_a_password_change_needs_the_code_too(self, guard: Guard) -> None:
        """A stolen password alone cannot change the password: MFA_REQUIRED, nothing changed."""
        totp = _enrol(guard, "mfa-change")
        new = secret("Changed-Pw-77!")
        with guard.broker.channel() as channel:
            reply = signin_pb2_grpc.SignInServiceStub(channel).ChangePassword(
                signin_pb2.ChangePasswordRequest(
                    username=f"mfa-change@{DOMAIN}",
                    old_password=USERS["mfa-change"],
                    new_password=new,
                ),
                timeout=10,
            )
        assert reply.outcome == Outcome.MFA_REQUIRED
        code = known(mfa.code_at(totp, time.time()))
        stdin = f"{USERS['mfa-change']}\n{new}\n{code}\n"
        done = signin_cli(guard.broker, f"mfa-change@{DOMAIN}", stdin, "--change-password")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "password changed" in done.stdout
        assert guard.sign_in("mfa-change", new).outcome == Outcome.MFA_REQUIRED  # The new one.

    @pytest.mark.usefixtures("always")
    def test_pta_signin_asks_for_the_code(self, guard: Guard) -> None:
        """``pta-signin`` reads the code after the password and prints the outcome."""
        totp = _enrol(guard, "mfa-cli")
        code = known(mfa.code_at(totp, time.time()))
        done = signin_cli(
            guard.broker, f"mfa-cli@{DOMAIN}", f"{USERS['mfa-cli']}\n{code}\n", "--token"
        )
        assert done.returncode == 0, done.stderr
        assert "MFA_REQUIRED" in done.stderr
        assert _verify(guard, done.stdout.strip())["sub"] == f"mfa-cli@{DOMAIN}"


class TestMfaCommands:
    """The MFA commands refuse what would surprise an administrator, in one line."""

    def test_enrol_again_needs_replace(self, guard: Guard) -> None:
        """A second enrol without --replace is refused; with it, only the new secret works."""
        first = _enrol(guard, "mfa-twice")
        again = guard.broker.cli(
            "mfa", "enroll", "--tenant", "guard", f"mfa-twice@{DOMAIN}", "--mfa-key-file",
            str(guard.key_file), check=False,
        )  # fmt: skip
        assert again.returncode == 1
        assert "already has an authenticator: --replace" in again.stderr
        assert "otpauth" not in again.stdout, "no new secret was made"
        replaced = guard.broker.cli(
            "mfa", "enroll", "--tenant", "guard", f"mfa-twice@{DOMAIN}", "--mfa-key-file",
            str(guard.key_file), "--replace",
        )  # fmt: skip
        uri = urllib.parse.urlparse(replaced.stdout.strip())
        second = known(urllib.parse.parse_qs(uri.query)["secret"][0])
        assert base64.b32decode(second + "=" * (-len(second) % 8)) != first

    def test_mfa_policy_warns_when_the_broker_has_no_key(self, run_dir: Path) -> None:
        """`tenant policy --mfa always` against a broker serving without a key: a warning."""
        broker = BrokerProcess.start(run_dir, "broker-no-mfa-key")
        try:
            broker.add_tenant("nokey", "nokey.example")
            wait_for(
                lambda: (
                    "no MFA key"
                    in broker.cli("tenant", "policy", "nokey", "--mfa", "always").stderr
                ),
                what="the warning (the broker reports its state every second)",
            )
            quiet = broker.cli("tenant", "policy", "nokey", "--mfa", "never")
            assert "WARNING" not in quiet.stderr
        finally:
            broker.stop()


class TestTokens:
    """What an application receives, and how it checks it."""

    def test_token_verifies_with_the_published_key(self, guard: Guard) -> None:
        """Subject, tenant, methods, issue and expiry time; signed by a published key."""
        reply = guard.sign_in("resetter", USERS["resetter"], ip=OFFICE_IP)
        claims = _verify(guard, reply.token)
        assert claims["sub"] == f"resetter@{DOMAIN}"
        assert claims["tenant"] == "guard"
        assert claims["amr"] == ["pwd"]
        assert claims["jti"] == reply.request_id
        assert claims["exp"] == reply.token_expires_at
        assert 0 < reply.token_expires_at - int(claims["iat"]) <= TOKEN_TTL  # type: ignore[call-overload]

    def test_token_fails_after_expiry(self, guard: Guard) -> None:
        """After its lifetime the same token is refused."""
        token = guard.sign_in("resetter", USERS["resetter"], ip=OFFICE_IP).token
        time.sleep(TOKEN_TTL + 1.1)
        with pytest.raises(jwt.ExpiredSignatureError):
            _verify(guard, token)

    def test_token_fails_with_another_key(self, guard: Guard) -> None:
        """A key that is not the broker's does not verify its tokens."""
        token = guard.sign_in("resetter", USERS["resetter"], ip=OFFICE_IP).token
        impostor = Ed25519PrivateKey.generate().public_key()
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(token, impostor, algorithms=["EdDSA"])

    def test_keys_are_private_files(self, guard: Guard) -> None:
        """The signing keys are on disk readable by the broker's user only."""
        keys = list((guard.broker.data_dir / "signing").glob("*.pem"))
        assert keys
        assert all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
