"""Chaos: agents killed (SIGKILL) and restarted under steady load; nothing is lost or wrong."""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING

import pytest

from tests.support import AgentProcess, BrokerProcess, SignInLoad

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tooling.slapd import Slapd

SECONDS = 9.0
#: Seconds between kills: a range, as the review ran it.
KILL_EVERY = (1.5, 2.0)


@pytest.fixture(scope="module")
def trio(broker: BrokerProcess, slapd: Slapd) -> Iterator[list[AgentProcess]]:
    """Tenant ``chaos`` with three agents."""
    broker.add_tenant("chaos", "chaos.example")
    agents = [AgentProcess.start(broker, slapd, "chaos", f"agent-chaos-{i}") for i in range(3)]
    yield agents
    for agent in agents:
        agent.stop()


class TestChaos:
    """Every sign-in gets exactly one definite answer before its deadline, whatever dies."""

    def test_agents_killed_under_load(
        self, broker: BrokerProcess, slapd: Slapd, trio: list[AgentProcess]
    ) -> None:
        """Kill -9 an agent every 1.5-2 s and restart it: every sign-in answered, and right.

        Sign-ins never written to a killed agent go to another agent; those written to it go
        too, the lost try counted by the directory guard (the directory here locks after 5:
        room for a second try is there). So not one is UNAVAILABLE.
        """
        load = SignInLoad(broker, "chaos.example", SECONDS)
        runner = threading.Thread(target=load.run_threads, args=(6,))
        runner.start()
        chooser = random.Random(7)  # noqa: S311 - picks a victim, not a secret
        kills = 0
        deadline = time.monotonic() + SECONDS - 1.5
        while time.monotonic() < deadline:
            time.sleep(chooser.uniform(*KILL_EVERY))
            victim = chooser.choice(trio)
            victim.process.kill()
            victim.process.wait(5)
            kills += 1
            victim.process = AgentProcess.launch(victim.state_dir, slapd, victim.log_path)
        runner.join(timeout=60)
        assert not runner.is_alive(), "the load hung"
        events = broker.log_events("signin.agent_lost_while_checking")
        lost = [e for e in events if e["tenant"] == "chaos"]
        assert load.failures == [], load.failures[:5]
        assert dict(load.statuses) == {"OK": load.answered}, load.statuses
        assert kills >= 4
        print(  # noqa: T201 - the figures the closing note quotes
            f"\nchaos: {load.answered} sign-ins sent and answered, {kills} agents killed, "
            f"{len(lost)} lost while their agent had them (each sent to another), "
            f"{len(load.failures)} failed or wrong, 0 lost; statuses {dict(load.statuses)}"
        )
