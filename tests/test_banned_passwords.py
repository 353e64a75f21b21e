"""Banned passwords on ChangePassword, through a real broker, agent and slapd, and the CLI."""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import ldap3
import pytest

from broker.policy.password_protection import TOO_GUESSABLE
from pta.v1 import outcome_pb2
from tests.secrets_registry import known, secret
from tests.support import AgentProcess, BrokerProcess, change_password, signin_cli, wait_for
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pta.v1 import signin_pb2

Outcome = outcome_pb2.Outcome
KIM = secret("Kim-pw-31+")
LENA = secret("Lena-pw-32+")
NOOR = secret("Noor-pw-33+")
#: What AD's complexity rule lets through and the global list does not.
COMMON = known("Summer2026!")
ALSO_COMMON = known("P@ssw0rd1")
#: Fine for the global list; refused once the tenant bans "gizmotron".
GIZMO = known("Gizmotron!7x")
#: A passphrase with a banned word in it: it passes on its length.
PASSPHRASE = known("the dolphins swim under a blue sky")


@pytest.fixture(scope="module")
def ban_directory() -> Iterator[Slapd]:
    """A slapd of its own: passwords change here."""
    users = [
        DirectoryUser(uid="kim", password=KIM),
        DirectoryUser(uid="lena", password=LENA),
        DirectoryUser(uid="noor", password=NOOR),
    ]
    with Slapd(users=users) as server:
        yield server


@pytest.fixture(scope="module")
def ban_agent(broker: BrokerProcess, ban_directory: Slapd) -> Iterator[AgentProcess]:
    """Tenant ``ban`` with one agent that logs each check it makes (debug)."""
    broker.add_tenant("ban", "ban.example")
    agent = AgentProcess.start(broker, ban_directory, "ban", "agent-ban", log_level="debug")
    yield agent
    agent.stop()


def change(
    broker: BrokerProcess, user: str, old: str, new: str
) -> signin_pb2.ChangePasswordResponse:
    """Call ChangePassword once for a user of ``ban.example``."""
    return change_password(broker, f"{user}@ban.example", old, new)


def password_state(directory: Slapd, uid: str) -> dict[str, Any]:
    """What slapd holds of a user's password: the hash, its history, when it changed."""
    conn = ldap3.Connection(
        directory.url, directory.admin_dn, directory.admin_password, auto_bind=True
    )
    try:
        conn.search(
            directory.user_dn(uid),
            "(objectClass=*)",
            ldap3.BASE,
            attributes=["userPassword", "pwdHistory", "pwdChangedTime"],
        )
        raw = (conn.response or [{}])[0]["raw_attributes"]
        return {k: sorted(bytes(x).decode() for x in v) for k, v in raw.items() if v}
    finally:
        conn.unbind()


def audit(broker: BrokerProcess, request_id: str) -> dict[str, object]:
    """The broker's audit event of one password change."""
    (event,) = [
        e
        for e in broker.log_events("password_change.completed")
        if e.get("request_id") == request_id
    ]
    return event


@pytest.mark.usefixtures("ban_agent")
class TestBannedPasswordChange:
    """A refused new password reaches no agent and no directory; a good one does."""

    @pytest.mark.parametrize("banned", [COMMON, ALSO_COMMON], ids=["summer", "password"])
    def test_refused_change_never_reaches_slapd(
        self, broker: BrokerProcess, ban_agent: AgentProcess, ban_directory: Slapd, banned: str
    ) -> None:
        """PASSWORD_REJECTED in words; slapd's password and history unchanged; no agent asked."""
        before = password_state(ban_directory, "kim")
        response = change(broker, "kim", KIM, banned)
        assert (response.outcome, response.message) == (Outcome.PASSWORD_REJECTED, TOO_GUESSABLE)
        assert "commonly used password" in response.message
        assert password_state(ban_directory, "kim") == before
        assert "pwdHistory" not in before
        assert response.request_id not in ban_agent.validated()
        event = audit(broker, response.request_id)
        assert (event["answer"], event["decided_by"]) == ("PASSWORD_REJECTED", "banned_password")
        assert "agent_id" not in event
        assert "outcome" not in event

    def test_refusal_counts_nothing(self, broker: BrokerProcess) -> None:
        """The old password is not checked then, so a wrong one is not counted either."""
        wrong = secret("not-noors-pw")
        for _ in range(3):
            assert change(broker, "noor", wrong, COMMON).outcome == Outcome.PASSWORD_REJECTED
        counted = json.loads(broker.cli("lockout", "list", "--tenant", "ban", "--json").stdout)
        assert [row for row in counted if row["user"].startswith("noor")] == []

    def test_good_change_reaches_slapd(
        self, broker: BrokerProcess, ban_agent: AgentProcess, ban_directory: Slapd
    ) -> None:
        """A long passphrase with one banned word in it changes the password in slapd."""
        before = password_state(ban_directory, "kim")
        response = change(broker, "kim", KIM, PASSPHRASE)
        assert (Outcome.Name(response.outcome), response.message) == ("SUCCESS", "password changed")
        after = password_state(ban_directory, "kim")
        assert after["userPassword"] != before["userPassword"]
        assert len(after["pwdHistory"]) == 1
        wait_for(lambda: response.request_id in ban_agent.validated(), what="the agent's check")
        assert broker.sign_in("kim@ban.example", PASSPHRASE).outcome == Outcome.SUCCESS

    def test_cli_shows_the_refusal(self, broker: BrokerProcess) -> None:
        """``pta-signin --change-password`` prints why and exits 17 (PASSWORD_REJECTED)."""
        done = signin_cli(broker, "lena@ban.example", f"{LENA}\n{COMMON}\n", "--change-password")
        assert done.returncode == 17, done.stdout + done.stderr
        assert done.stdout == f"PASSWORD_REJECTED: {TOO_GUESSABLE}\n"

    def test_tenant_term_applies_on_the_running_broker(self, broker: BrokerProcess) -> None:
        """A term added with the CLI refuses passwords within a second; removed, it stops."""
        wrong = secret("not-lenas-pw")
        assert change(broker, "lena", wrong, GIZMO).outcome == Outcome.INVALID_CREDENTIALS
        broker.cli("tenant", "banned-passwords", "ban", "--add", "Gizm0tron")
        wait_for(
            lambda: change(broker, "lena", wrong, GIZMO).outcome == Outcome.PASSWORD_REJECTED,
            timeout=2,
            what="the new term to apply",
        )
        broker.cli("tenant", "banned-passwords", "ban", "--remove", "gizmotron")
        wait_for(
            lambda: change(broker, "lena", wrong, GIZMO).outcome == Outcome.INVALID_CREDENTIALS,
            timeout=2,
            what="the term's removal to apply",
        )


@pytest.mark.usefixtures("ban_agent")
class TestBannedPasswordsCli:
    """``pta-broker tenant banned-passwords``: add, remove, list, and its limits."""

    def test_add_list_remove(self, broker: BrokerProcess) -> None:
        """Terms are kept as typed, compared normalised; --json shows both."""
        added = broker.cli("tenant", "banned-passwords", "ban", "--add", "Contoso", "W1dget")
        assert "2 added, 0 removed" in added.stderr
        again = broker.cli("tenant", "banned-passwords", "ban", "--add", "c0ntoso", "--list")
        assert "0 added" in again.stderr
        assert again.stdout.splitlines() == ["Contoso", "W1dget"]
        rows = json.loads(broker.cli("tenant", "banned-passwords", "ban", "--json").stdout)
        assert rows == [
            {"term": "Contoso", "normalised": "contoso"},
            {"term": "W1dget", "normalised": "wldget"},
        ]
        shown = broker.cli("tenant", "show", "ban", "--json").stdout
        assert json.loads(shown)["banned_terms"] == 2
        broker.cli("tenant", "banned-passwords", "ban", "--remove", "CONTOSO", "widget")
        assert broker.cli("tenant", "banned-passwords", "ban").stdout == ""

    @pytest.mark.parametrize(
        ("term", "error"),
        [
            ("abc", "'abc': a banned term has 4 to 16 characters"),
            ("x" * 17, "a banned term has 4 to 16 characters"),
            ("new york", "'new york': a banned term is one word of printable characters"),
        ],
        ids=["short", "long", "two-words"],
    )
    def test_refused_term(self, broker: BrokerProcess, term: str, error: str) -> None:
        """A term the list cannot hold: one line saying why, exit 1, nothing added."""
        done = broker.cli(
            "tenant", "banned-passwords", "ban", "--add", "fine-term", term, check=False
        )
        assert done.returncode == 1
        assert done.stderr.startswith("pta-broker: ")
        assert error in done.stderr
        assert len(done.stderr.splitlines()) == 1
        assert broker.cli("tenant", "banned-passwords", "ban").stdout == ""

    def test_too_many_terms(self, broker: BrokerProcess) -> None:
        """At most 5,000 terms a tenant: more is refused whole."""
        terms = ["".join(t) for t in itertools.product("bcdfghjk", repeat=5)][:5001]
        done = broker.cli("tenant", "banned-passwords", "ban", "--add", *terms, check=False)
        assert (done.returncode, done.stderr) == (
            1,
            "pta-broker: tenant ban would have 5001 banned terms: at most 5000\n",
        )
        assert broker.cli("tenant", "banned-passwords", "ban").stdout == ""

    def test_unknown_tenant(self, broker: BrokerProcess) -> None:
        """A tenant that does not exist is named."""
        done = broker.cli("tenant", "banned-passwords", "nope", "--list", check=False)
        assert (done.returncode, done.stderr) == (1, "pta-broker: no tenant 'nope'\n")
