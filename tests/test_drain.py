"""Graceful drain: an agent told to stop answers everything it was sent, then exits."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import TYPE_CHECKING

import pytest

from tests.support import AgentProcess, BrokerProcess, SignInLoad, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tooling.slapd import Slapd


@pytest.fixture(scope="module")
def pair(broker: BrokerProcess, slapd: Slapd) -> Iterator[list[AgentProcess]]:
    """Tenant ``drain`` with two agents."""
    broker.add_tenant("drain", "drain.example")
    agents = [AgentProcess.start(broker, slapd, "drain", f"agent-drain-{i}") for i in range(2)]
    yield agents
    for agent in agents:
        agent.stop()


class TestAgentDrain:
    """SIGTERM to an agent under load loses no sign-in."""

    def test_sigterm_under_load(self, broker: BrokerProcess, pair: list[AgentProcess]) -> None:
        """The stopping agent drains and exits 0; its peer takes the load; nothing fails."""
        leaving = pair[0]
        load = SignInLoad(broker, "drain.example", 4.0)
        runner = threading.Thread(target=load.run_threads)
        runner.start()
        time.sleep(1.0)
        leaving.process.send_signal(signal.SIGTERM)
        assert leaving.process.wait(10) == 0
        runner.join()
        assert load.failures == []
        assert load.answered > 50
        events = [
            json.loads(line)
            for line in leaving.log_path.read_text().splitlines()
            if line.startswith("{")
        ]
        names = [e["event"] for e in events]
        assert "agent.stopped" in names
        assert "agent.stopped_before_drained" not in names
        wait_for(
            lambda: any(
                e.get("agent_id") == leaving.agent_id for e in broker.log_events("agent.draining")
            ),
            what="the broker to see the drain",
        )
        disconnected = [
            e for e in broker.log_events("agent.disconnected") if e["agent_id"] == leaving.agent_id
        ]
        assert disconnected[-1]["reason"] == "drained"
