"""One directory account, one count: real slapd (ppolicy), broker and agent processes, mTLS.

Tenant ``onedir`` owns two domains served by one agent searching ``uid`` (the default), so
``alice@one.example`` and ``alice@two.example`` are one account in slapd, which locks it after
5 wrong passwords. The broker must count them as one: its lockout, its memory of refused
passwords, its directory guard, its CLI and MFA enrolment.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jwt
import ldap3
import pytest

from broker.policy import mfa
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tests.secrets_registry import known, secret
from tests.support import AgentProcess, BrokerProcess, wait_for
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
TENANT = "onedir"
ONE, TWO = "one.example", "two.example"
DIRECTORY_THRESHOLD = 5  # tooling/slapd.py's default password policy: pwdMaxFailure.
#: The directory guard's budget from an unfamiliar place: one short, one kept for the user.
GUARD_BUDGET = DIRECTORY_THRESHOLD - 2
ACCOUNT = "alice@[dc=example,dc=com]"
PASSWORDS = {uid: secret(f"{uid.capitalize()}-Onedir-1!") for uid in ("alice", "bob")}
#: Wrong passwords alternated over both domains and spellings slapd matches as ``alice``.
GUESSES = [
    (f"alice@{ONE}", secret("onedir-guess-0")),
    (f"ALICE@{TWO}", secret("onedir-guess-1")),
    (f"al\u0130ce@{ONE}", secret("onedir-guess-2")),  # Capital I with dot above: slapd reads i.
    (f"\uff41lice@{TWO}", secret("onedir-guess-3")),  # Fullwidth a.
    (f" Alice @{ONE}", secret("onedir-guess-4")),
    (f"alice\u3000@{TWO}", secret("onedir-guess-5")),  # An ideographic space, trailing.
    (f"aLiCe@{ONE}", secret("onedir-guess-6")),
]


@dataclass
class OneDirectory:
    """The module's slapd, broker and agent."""

    slapd: Slapd
    broker: BrokerProcess
    agent: AgentProcess
    key_file: Path

    def failures_in_slapd(self, uid: str) -> int:
        """How many wrong passwords slapd itself has counted for ``uid`` (ppolicy)."""
        with self._admin() as conn:
            conn.search(
                self.slapd.user_dn(uid), "(objectClass=*)", ldap3.BASE, attributes=["*", "+"]
            )
            attributes = conn.entries[0].entry_attributes_as_dict
            assert "pwdAccountLockedTime" not in attributes, "slapd locked the account"
            return len(attributes.get("pwdFailureTime", []))

    def binds_directly(self, uid: str) -> bool:
        """Whether ``uid``'s right password binds against slapd itself (not locked)."""
        server = ldap3.Server(self.slapd.url, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, self.slapd.user_dn(uid), PASSWORDS[uid])
        try:
            return bool(conn.bind())
        finally:
            conn.unbind()

    def counters(self) -> list[dict[str, object]]:
        """``pta-broker lockout list --json`` for the tenant."""
        listed = self.broker.cli("lockout", "list", "--tenant", TENANT, "--json").stdout
        rows: list[dict[str, object]] = json.loads(listed)
        return rows

    def _admin(self) -> ldap3.Connection:
        server = ldap3.Server(self.slapd.url, get_info=ldap3.NONE)
        return ldap3.Connection(
            server, self.slapd.admin_dn, self.slapd.admin_password, auto_bind=True
        )


@pytest.fixture(scope="module")
def onedir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneDirectory]:
    """Tenant onedir (two domains), its broker (with an MFA key) and one uid agent."""
    key_file = tmp_path_factory.mktemp("keys") / "onedir-mfa.key"
    made = BrokerProcess.cli_without_data("mfa", "keygen", str(key_file))
    assert made.returncode == 0, made.stderr
    known(key_file.read_text().strip())
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in PASSWORDS.items()]
    with Slapd(users=users) as slapd:
        broker = BrokerProcess.start(run_dir, "broker-onedir", "--mfa-key-file", str(key_file))
        broker.add_tenant(TENANT, ONE, TWO)
        agent = AgentProcess.start(broker, slapd, TENANT, "agent-onedir")
        # The guard needs the directory's threshold: wait until the agent has reported it.
        reported = broker.wait_for_policies(TENANT, agent.agent_id, {ONE, TWO})
        assert {p.lockout_threshold for p in reported.values()} == {DIRECTORY_THRESHOLD}
        yield OneDirectory(slapd, broker, agent, key_file)
        agent.stop()
        broker.stop()


def _complete(broker: BrokerProcess, challenge: str, code: str) -> signin_pb2.SignInResponse:
    known(challenge)
    with broker.channel() as channel:
        reply: signin_pb2.SignInResponse = signin_pb2_grpc.SignInServiceStub(channel).CompleteMfa(
            signin_pb2.CompleteMfaRequest(challenge_id=challenge, code=code), timeout=10
        )
        return reply


def _subject(token: str) -> object:
    known(token)
    return jwt.decode(token, options={"verify_signature": False})["sub"]


class TestOneAccount:
    """Every name slapd takes for one account shares the broker's counts."""

    def test_guesses_over_both_domains_never_lock_the_directory(self, onedir: OneDirectory) -> None:
        """Alternated domains and spellings: the guard stops one short; slapd never locks.

        Keyed on the typed name, each domain and spelling had its own count and all seven
        guesses reached slapd, which locked alice after five.
        """
        answers = [onedir.broker.sign_in(name, guess) for name, guess in GUESSES]
        assert [Outcome.Name(a.outcome) for a in answers] == (
            ["INVALID_CREDENTIALS"] * GUARD_BUDGET
            + ["LOCKED_BY_POLICY"] * (len(GUESSES) - GUARD_BUDGET)
        )
        assert onedir.failures_in_slapd("alice") == GUARD_BUDGET
        assert onedir.binds_directly("alice")  # Also resets slapd's own count.
        assert {row["user"] for row in onedir.counters()} == {ACCOUNT}
        events = onedir.broker.log_events("accounts.rule_changed")
        assert {e["domain"] for e in events if e["tenant"] == TENANT} == {ONE, TWO}

    def test_lockout_clear_by_either_domain_clears_the_account(self, onedir: OneDirectory) -> None:
        """``lockout clear`` with the other domain's name unlocks alice everywhere."""
        assert onedir.counters()  # What the previous test left: alice's counts.
        cleared = onedir.broker.cli("lockout", "clear", "--tenant", TENANT, f"Alice@{TWO}")
        assert "cleared 2 counter(s)" in cleared.stdout  # Unfamiliar, and the guard's.
        assert onedir.counters() == []
        wait_for(
            lambda: (
                onedir.broker.sign_in(f"alice@{ONE}", PASSWORDS["alice"]).outcome == Outcome.SUCCESS
            ),
            what="the broker to apply the unlock",
        )
        reply = onedir.broker.sign_in(f"ALICE@{ONE}", PASSWORDS["alice"])
        assert _subject(reply.token) == f"alice@{ONE}"  # The typed name, not the account.

    def test_mfa_enrolled_via_one_domain_applies_to_the_other(self, onedir: OneDirectory) -> None:
        """Bob enrolled as bob@one.example is asked for his code as bob@two.example."""
        seen = len(onedir.broker.log_events("policy.changed"))
        onedir.broker.cli("tenant", "policy", TENANT, "--mfa", "always")
        wait_for(lambda: len(onedir.broker.log_events("policy.changed")) > seen, what="policy")
        enrolled = onedir.broker.cli(
            "mfa", "enroll", "--tenant", TENANT, f"bob@{ONE}", "--mfa-key-file",
            str(onedir.key_file),
        )  # fmt: skip
        uri = urllib.parse.urlparse(enrolled.stdout.strip())
        assert urllib.parse.unquote(uri.path).endswith(
            f"bob@{ONE}"
        )  # The app shows the name the user types.
        text = known(urllib.parse.parse_qs(uri.query)["secret"][0])
        secret = base64.b32decode(text + "=" * (-len(text) % 8))
        first = onedir.broker.sign_in(f"Bob@{TWO}", PASSWORDS["bob"])
        assert first.outcome == Outcome.MFA_REQUIRED, first.message
        done = _complete(onedir.broker, first.mfa_challenge_id, mfa.code_at(secret, time.time()))
        assert done.outcome == Outcome.SUCCESS, done.message
        assert _subject(done.token) == f"bob@{TWO}"
        listed = onedir.broker.cli("mfa", "list", "--tenant", TENANT).stdout.split()
        assert listed == ["bob@[dc=example,dc=com]"]

        removed = onedir.broker.cli("mfa", "remove", "--tenant", TENANT, f"bob@{TWO}")
        assert removed.returncode == 0
        refused = onedir.broker.sign_in(f"bob@{ONE}", PASSWORDS["bob"])
        assert refused.outcome == Outcome.MFA_NOT_ENROLLED
