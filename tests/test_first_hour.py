"""A first deployment's mistakes, made as a newcomer makes them, against real processes.

An agent started with a wrong base DN answers every sign-in "no such user"; once it is fixed
and restarted, a right password must get through at once: nothing the broken configuration
answered may keep refusing it (seen before: `decided_by: repeat` until `lockout clear`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pta.v1 import outcome_pb2
from tests.conftest import USERS
from tests.support import AgentProcess, BrokerProcess, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

Outcome = outcome_pb2.Outcome
DOMAIN = "first.example"


@pytest.fixture(scope="module")
def newcomer(run_dir: Path) -> Iterator[BrokerProcess]:
    """A broker of its own with tenant ``first``."""
    broker = BrokerProcess.start(run_dir, "broker-first-hour")
    broker.add_tenant("first", DOMAIN)
    yield broker
    broker.stop()


def _connections(broker: BrokerProcess, agent_id: str) -> int:
    return sum(e.get("agent_id") == agent_id for e in broker.log_events("agent.connected"))


class TestMisconfiguredAgent:
    """What a broken agent answered is forgotten once it is fixed."""

    def test_wrong_base_dn_then_fixed(
        self, newcomer: BrokerProcess, slapd: Slapd, tmp_path: Path
    ) -> None:
        """A base DN with no users: bob is refused (twice); fixed: bob's password works."""
        state = tmp_path / "agent"
        AgentProcess.enrol(newcomer, "first", state)
        log_path = tmp_path / "agent.log"
        wrong_base = f"ou=policies,{slapd.base_dn}"  # Exists, holds nobody.
        process = AgentProcess.launch(
            state, None, log_path, "--ldap-url", slapd.url, "--base-dn", wrong_base
        )
        agent = AgentProcess(state_dir=state, log_path=log_path, process=process, agent_id="")
        try:
            wait_for(lambda: newcomer.log_events("agent.connected"), what="the agent")
            agent_id = str(newcomer.log_events("agent.connected")[-1]["agent_id"])
            for _ in range(2):  # The second time, it is a repeat of a refused password.
                reply = newcomer.sign_in(f"bob@{DOMAIN}", USERS["bob"])
                assert reply.outcome == Outcome.INVALID_CREDENTIALS
            audits = [e["outcome"] for e in newcomer.log_events("signin.completed")]
            assert audits[-2:] == ["UNKNOWN_USER", "UNKNOWN_USER"], "asked the directory again"
            agent.stop()
            before = _connections(newcomer, agent_id)
            agent.process = AgentProcess.launch(
                state, None, log_path, "--ldap-url", slapd.url, "--base-dn", slapd.base_dn
            )
            wait_for(lambda: _connections(newcomer, agent_id) > before, what="the fixed agent")
            reply = newcomer.sign_in(f"bob@{DOMAIN}", USERS["bob"])
            assert reply.outcome == Outcome.SUCCESS, reply
        finally:
            agent.stop()
