"""Sign-ins end to end: client -> broker -> sealed envelope -> agent (mTLS) -> slapd -> answer."""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from typing import TYPE_CHECKING

import grpc
import pytest

from pta.v1 import outcome_pb2
from tests.conftest import DOMAIN, STATE_USERS, USERS
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tooling.slapd import Slapd

Outcome = outcome_pb2.Outcome


@pytest.mark.usefixtures("agent")
class TestSignIn:
    """The answers a user gets, through one broker and one agent."""

    @pytest.mark.parametrize("uid", list(USERS), ids=["alice", "bob", "carol", "special-chars"])
    def test_right_password_succeeds(self, broker: BrokerProcess, uid: str) -> None:
        """Every sample user signs in with their own password."""
        response = broker.sign_in(f"{uid}@{DOMAIN}", USERS[uid])
        assert response.outcome == Outcome.SUCCESS
        assert response.request_id
        assert response.message == "signed in"

    def test_wrong_password_is_invalid_credentials(self, broker: BrokerProcess) -> None:
        """A wrong password is an outcome, not an error."""
        response = broker.sign_in(f"alice@{DOMAIN}", secret("not-alices-pw"))
        assert response.outcome == Outcome.INVALID_CREDENTIALS

    def test_unknown_user_looks_like_wrong_password(self, broker: BrokerProcess) -> None:
        """The client cannot tell a missing user from a wrong password; the audit log can."""
        response = broker.sign_in(f"nobody@{DOMAIN}", secret("whatever-pw"))
        assert response.outcome == Outcome.INVALID_CREDENTIALS
        audit = [
            e
            for e in broker.log_events("signin.completed")
            if e.get("request_id") == response.request_id
        ]
        assert [e["outcome"] for e in audit] == ["UNKNOWN_USER"]

    def test_case_of_domain_does_not_matter(self, broker: BrokerProcess) -> None:
        """UPN suffixes are case-insensitive."""
        response = broker.sign_in("alice@EXAMPLE.com", USERS["alice"])
        assert response.outcome == Outcome.SUCCESS

    @pytest.mark.parametrize(
        "login",
        ["*", "al*", "*)(uid=*", "*)(|(objectClass=*", "alice)(", "ali\\2a", "alice\x00"],
        ids=["star", "prefix-star", "filter-close", "filter-or", "paren", "escaped-star", "nul"],
    )
    def test_filter_injection_signs_nobody_in(self, broker: BrokerProcess, login: str) -> None:
        """LDAP filter syntax in the login name is escaped: it matches no one."""
        username = f"{login}@{DOMAIN}"
        if "\x00" in login:  # Control characters are refused before anything is sealed.
            with pytest.raises(grpc.RpcError) as caught:
                broker.sign_in(username, USERS["alice"])
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert broker.sign_in(username, USERS["alice"]).outcome == Outcome.INVALID_CREDENTIALS

    def test_audit_event_has_no_password(self, broker: BrokerProcess) -> None:
        """Each sign-in leaves one audit event naming user, tenant, agent, outcome, latency."""
        response = broker.sign_in(f"bob@{DOMAIN}", USERS["bob"])
        (event,) = [
            e
            for e in broker.log_events("signin.completed")
            if e.get("request_id") == response.request_id
        ]
        assert event["user"] == f"bob@{DOMAIN}"
        assert event["tenant"] == "acme"
        assert event["outcome"] == "SUCCESS"
        assert str(event["agent_id"]).startswith("agt-")
        assert isinstance(event["duration_ms"], float)
        assert USERS["bob"] not in str(event)


class TestNoAgent:
    """A tenant with no agent connected gets a clear, immediate UNAVAILABLE."""

    def test_no_agent_is_unavailable(self, broker: BrokerProcess) -> None:
        """No hang: the answer names the domain that has no agent."""
        broker.add_tenant("lonely", "lonely.example")
        with pytest.raises(grpc.RpcError) as caught:
            broker.sign_in("alice@lonely.example", secret("pw-lonely"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "lonely.example" in str(caught.value.details())

    def test_unknown_domain_is_not_found(self, broker: BrokerProcess) -> None:
        """A domain no tenant owns is NOT_FOUND."""
        with pytest.raises(grpc.RpcError) as caught:
            broker.sign_in("alice@nobody-owns.example", secret("pw-nobody"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def duo(broker: BrokerProcess, slapd: Slapd) -> Iterator[list[AgentProcess]]:
    """Tenant ``duo`` with two agents on the same directory, logging each request they check."""
    broker.add_tenant("duo", "duo.example")
    agents = [
        AgentProcess.start(broker, slapd, "duo", f"agent-duo-{i}", log_level="debug")
        for i in range(2)
    ]
    yield agents
    for agent in agents:
        agent.stop()


class TestTwoAgents:
    """Several agents of a tenant share the load and survive each other."""

    def test_load_is_shared(self, broker: BrokerProcess, duo: list[AgentProcess]) -> None:
        """Concurrent sign-ins are answered by both agents, every answer right."""
        # The wrong half goes to users the directory lacks, one attempt each: 60 wrong
        # passwords for one user would lock it out (the broker's lockout, and slapd's).
        cases = [
            case
            for n in range(60)
            for case in (
                ("alice", USERS["alice"], Outcome.SUCCESS),
                (f"nobody{n}", secret("wrong"), Outcome.INVALID_CREDENTIALS),
            )
        ]
        with broker.channel() as _, concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [
                pool.submit(broker.sign_in, f"{uid}@duo.example", pw) for uid, pw, _ in cases
            ]
            outcomes = [f.result().outcome for f in futures]
        assert outcomes == [expected for _, _, expected in cases]
        agents = Counter(
            e.get("agent_id")
            for e in broker.log_events("signin.completed")
            if e.get("tenant") == "duo"
        )
        assert set(agents) == {a.agent_id for a in duo}
        assert min(agents.values()) >= 10, agents

    def test_other_agent_answers_when_one_stops(
        self, broker: BrokerProcess, duo: list[AgentProcess]
    ) -> None:
        """With one agent stopped, the other answers every sign-in."""
        duo[0].stop()
        for _ in range(5):
            assert broker.sign_in("carol@duo.example", USERS["carol"]).outcome == Outcome.SUCCESS


class TestTenantIsolation:
    """One tenant's agents never see another tenant's sign-ins."""

    @pytest.mark.usefixtures("agent")
    def test_agent_sees_only_its_tenant(
        self, broker: BrokerProcess, duo: list[AgentProcess]
    ) -> None:
        """Sign-ins for acme are answered only by acme's agent, duo's only by duo's.

        duo's agents log every request they check, so acme's request missing from their logs
        means they never saw it: duo's own sign-in, sent alongside, is there.
        """
        acme = broker.sign_in(f"alice@{DOMAIN}", USERS["alice"])
        own = broker.sign_in("carol@duo.example", USERS["carol"])
        assert (acme.outcome, own.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
        events = {
            e["request_id"]: e for e in broker.log_events("signin.completed") if "agent_id" in e
        }
        duo_ids = {a.agent_id for a in duo}
        assert events[acme.request_id]["agent_id"] not in duo_ids
        assert events[own.request_id]["agent_id"] in duo_ids
        wait_for(
            lambda: own.request_id in set().union(*(a.validated() for a in duo)),
            what="duo's agent to log the request it checked",
        )
        for agent in duo:
            assert acme.request_id not in agent.validated()
            assert acme.request_id not in agent.log_path.read_text()


@pytest.mark.usefixtures("agent")
class TestPasswordPolicyOutcomes:
    """OpenLDAP's password policy states reach the user as their own outcomes.

    Not as a wrong password: the authentik#5889 / keycloak#13084 mistake.
    """

    @pytest.mark.parametrize("uid", list(STATE_USERS), ids=list(STATE_USERS))
    def test_state_outcome(self, broker: BrokerProcess, uid: str) -> None:
        """The right password of a locked, must-change or expired account says so."""
        password, _, expected = STATE_USERS[uid]
        response = broker.sign_in(f"{uid}@{DOMAIN}", password)
        assert Outcome.Name(response.outcome) == expected

    def test_wrong_password_of_must_change_user(self, broker: BrokerProcess) -> None:
        """A wrong password never reveals the account's state (except a lockout)."""
        response = broker.sign_in(f"must-change@{DOMAIN}", secret("not-it-pw"))
        assert response.outcome == Outcome.INVALID_CREDENTIALS
