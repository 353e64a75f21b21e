"""Agent and directory health in ``pta-broker agents list``: reported by a real agent.

A broker, an agent and a private slapd, all real: the agent counts its checks by kind and times
its binds per server, and says so on its stream; the broker keeps the latest in its store, and
``agents list`` (and the AdminService behind it) shows it. A directory that stops answering is
shown down with why, within the report interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from agent.health import HEALTH_INTERVAL
from broker.maintenance import STATUS_INTERVAL
from pta.v1 import outcome_pb2
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess, wait_for
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
DOMAIN = "health.example"
USERS = {name: secret(f"{name.capitalize()}-Health-5!") for name in ("eve", "fay")}
WRONG = secret("Wrong-Health-6?")
#: What the docs promise: a change shows within one report and one status interval.
SHOWN_WITHIN = HEALTH_INTERVAL + STATUS_INTERVAL + 1.0


@dataclass
class Watched:
    """The module's broker, its directory and its agent."""

    broker: BrokerProcess
    slapd: Slapd
    agent: AgentProcess

    def sign_in(self, uid: str, password: str) -> str:
        """One sign-in's outcome name, or its status's name."""
        return self.broker.outcome(f"{uid}@{DOMAIN}", password)

    def row(self) -> dict[str, Any]:
        """The agent's row in ``agents list --json``."""
        return self.broker.agents().get(self.agent.agent_id, {})


@pytest.fixture(scope="module")
def watched(run_dir: Path) -> Iterator[Watched]:
    """A broker (lockout off), a slapd of its own, an agent."""
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
    with Slapd(users=users) as slapd:
        broker = BrokerProcess.start(run_dir, "broker-health")
        try:
            broker.add_tenant("hl", DOMAIN)
            broker.cli("tenant", "policy", "hl", "--lockout-threshold", "0")
            agent = AgentProcess.start(broker, slapd, "hl", "agent-health")
            try:
                yield Watched(broker, slapd, agent)
            finally:
                agent.stop()
        finally:
            broker.stop()


class TestHealth:
    """Checks by kind and each directory server, as the agent last said."""

    def test_checks_and_binds(self, watched: Watched) -> None:
        """2 right and 1 wrong: those checks; the server up, its binds timed."""
        outcomes = [watched.sign_in("eve", USERS["eve"]), watched.sign_in("fay", USERS["fay"])]
        outcomes.append(watched.sign_in("eve", WRONG))
        assert outcomes == ["SUCCESS", "SUCCESS", "INVALID_CREDENTIALS"]
        wait_for(
            lambda: watched.row().get("checks", {}).get("handled") == 3,
            timeout=SHOWN_WITHIN,
            what="the checks in agents list",
        )
        row = watched.row()
        checks = row["checks"]
        assert (checks["succeeded"], checks["failed"], checks["errors"]) == (2, 1, 0)
        assert checks["since"] <= row["certificates"][-1]["not_after"]
        [server] = row["directories"]
        assert server["server"] == watched.slapd.url
        assert server["reachable"] is True
        assert server["binds"] >= 3
        assert 0 < server["median_bind_ms"] < 1000
        assert server["last_error"] == ""
        text = watched.broker.cli("agents", "list").stdout
        assert "checks 3 (1 failed, 0 errors)" in text
        assert f"{watched.slapd.url} up " in text
        shown = json.dumps(row)
        for word in ("eve", "fay", USERS["eve"], WRONG, watched.slapd.base_dn):
            assert word not in shown

    def test_a_directory_that_stops_answering(self, watched: Watched) -> None:
        """Stopped: the next check is an error, the server down with why, within the bound.

        Last in the module: the directory stays down.
        """
        watched.slapd.stop()
        assert watched.sign_in("fay", USERS["fay"]) == "UNAVAILABLE"

        def down() -> bool:
            servers = watched.row().get("directories", [])
            return bool(servers) and not servers[0]["reachable"]

        wait_for(down, timeout=SHOWN_WITHIN, what="the server shown down")
        row = watched.row()
        [server] = row["directories"]
        assert server["last_error"]
        assert server["last_error_at"]
        assert row["checks"]["errors"] >= 1
        assert f"{watched.slapd.url} down: " in watched.broker.cli("agents", "list").stdout
