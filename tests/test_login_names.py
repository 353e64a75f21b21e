"""Login names: alternate login IDs, ambiguity, several domains per agent, routing by domain."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pta.v1 import outcome_pb2
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
LENA = secret("Lena-pw-9)")
TWIN = secret("Twin-pw-10_")


@pytest.fixture(scope="module")
def names_directory() -> Iterator[Slapd]:
    """Users with mail addresses, two of them sharing one."""
    users = [
        DirectoryUser(uid="lena", password=LENA, mail="lena.k@mail.example"),
        DirectoryUser(uid="twin1", password=TWIN, mail="same@mail.example"),
        DirectoryUser(uid="twin2", password=TWIN, mail="same@mail.example"),
    ]
    with Slapd(users=users) as server:
        yield server


def _config(path: Path, directory: Slapd, tables: list[tuple[str, str]]) -> Path:
    """Write an agent TOML config: one [[directory]] per (domain, login attribute)."""
    text = "".join(
        f'[[directory]]\ndomains = ["{domain}"]\nurls = ["{directory.url}"]\n'
        f'base_dn = "{directory.base_dn}"\nlogin_attribute = "{attribute}"\n\n'
        for domain, attribute in tables
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def names_agents(
    broker: BrokerProcess, names_directory: Slapd, run_dir: Path
) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """Tenant ``names`` with two agents configured by TOML files.

    Agent X serves mail.example (by mail) and uid.example (by uid); agent Y other.example only.
    """
    broker.add_tenant("names", "mail.example", "uid.example", "other.example")
    x_config = _config(
        run_dir / "agent-x.toml",
        names_directory,
        [("mail.example", "mail"), ("uid.example", "uid")],
    )
    y_config = _config(run_dir / "agent-y.toml", names_directory, [("other.example", "uid")])
    x = AgentProcess.start(broker, None, "names", "agent-names-x", "--config", str(x_config))
    y = AgentProcess.start(broker, None, "names", "agent-names-y", "--config", str(y_config))
    yield x, y
    x.stop()
    y.stop()


def _agent_of(broker: BrokerProcess, request_id: str) -> object:
    (event,) = [e for e in broker.log_events("signin.completed") if e["request_id"] == request_id]
    return event["agent_id"]


class TestLoginNames:
    """Users sign in with the attribute their domain is configured for."""

    def test_sign_in_by_mail(
        self, broker: BrokerProcess, names_agents: tuple[AgentProcess, AgentProcess]
    ) -> None:
        """On mail.example the login name is the mail address, looked up by the agent."""
        response = broker.sign_in("lena.k@mail.example", LENA)
        assert response.outcome == Outcome.SUCCESS
        assert _agent_of(broker, response.request_id) == names_agents[0].agent_id

    def test_sign_in_by_uid(
        self, broker: BrokerProcess, names_agents: tuple[AgentProcess, AgentProcess]
    ) -> None:
        """On uid.example the same agent looks the user up by uid."""
        del names_agents
        assert broker.sign_in("lena@uid.example", LENA).outcome == Outcome.SUCCESS

    def test_ambiguous_login_signs_nobody_in(
        self, broker: BrokerProcess, names_agents: tuple[AgentProcess, AgentProcess]
    ) -> None:
        """Two entries with the login name: refused and logged, never a bind as the first."""
        response = broker.sign_in("same@mail.example", TWIN)
        assert response.outcome == Outcome.INVALID_CREDENTIALS
        assert "directory.ambiguous_login" in names_agents[0].log_path.read_text()

    def test_routed_only_to_the_agent_serving_the_domain(
        self, broker: BrokerProcess, names_agents: tuple[AgentProcess, AgentProcess]
    ) -> None:
        """Sign-ins for other.example go to agent Y only; uid.example to agent X only."""
        x, y = names_agents
        for _ in range(6):
            other = broker.sign_in("lena@other.example", LENA)
            assert other.outcome == Outcome.SUCCESS
            assert _agent_of(broker, other.request_id) == y.agent_id
            mine = broker.sign_in("lena@uid.example", LENA)
            assert _agent_of(broker, mine.request_id) == x.agent_id

    def test_hello_domains_are_kept(
        self, broker: BrokerProcess, names_agents: tuple[AgentProcess, AgentProcess]
    ) -> None:
        """The broker records which domains each agent serves."""
        x, y = names_agents
        connected = {e["agent_id"]: e["domains"] for e in broker.log_events("agent.connected")}
        assert connected[x.agent_id] == ["mail.example", "uid.example"]
        assert connected[y.agent_id] == ["other.example"]
