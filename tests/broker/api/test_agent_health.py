"""``broker/api/agent_health.py``: what an agent may say of itself is bounded before it is kept."""

from __future__ import annotations

import json

from broker.api import agent_health
from pta.v1 import agent_pb2


def test_a_report_is_kept_as_said() -> None:
    """Counts, the start, each server: kept as the agent said them."""
    report = agent_pb2.Health(
        started_at=1_700_000_000.5, handled=10, succeeded=7, failed=2, errors=1,
        servers=[agent_pb2.ServerHealth(
            server="ldap://127.0.0.1:389", reachable=True, median_bind_ms=1.25, binds=10
        )],
    )  # fmt: skip
    kept = json.loads(agent_health.accepted(report))
    assert kept == {
        "started_at": 1_700_000_000.5, "handled": 10, "succeeded": 7, "failed": 2, "errors": 1,
        "servers": [{
            "server": "ldap://127.0.0.1:389", "reachable": True, "last_error": "",
            "last_error_at": 0.0, "median_bind_ms": 1.25, "binds": 10,
        }],
    }  # fmt: skip


def test_an_oversized_or_nonsense_report_is_bounded() -> None:
    """A thousand servers, megabyte strings, NaN and negative numbers: bounded, still JSON."""
    report = agent_pb2.Health(
        started_at=float("nan"),
        handled=2**63,
        servers=[
            agent_pb2.ServerHealth(
                server="x" * 100_000, last_error="y" * 100_000, median_bind_ms=-5,
                last_error_at=float("inf"),
            )
            for _ in range(1000)
        ],
    )  # fmt: skip
    text = agent_health.accepted(report)
    kept = json.loads(text)
    assert len(kept["servers"]) == agent_health.MAX_SERVERS
    assert len(text) < 20_000
    assert kept["started_at"] == 0.0
    assert kept["handled"] == int(agent_health.MAX_NUMBER)
    first = kept["servers"][0]
    assert len(first["server"]) == agent_health.MAX_SERVER
    assert len(first["last_error"]) == agent_health.MAX_ERROR
    assert (first["median_bind_ms"], first["last_error_at"]) == (0.0, 0.0)


def test_control_characters_never_reach_a_terminal() -> None:
    """Newlines and escape sequences in what an agent says are dropped, the rest kept."""
    report = agent_pb2.Health(
        servers=[agent_pb2.ServerHealth(server="ldap://dc\n1:389", last_error="\x1b[2Jgone\r\n")]
    )
    [server] = json.loads(agent_health.accepted(report))["servers"]
    assert (server["server"], server["last_error"]) == ("ldap://dc1:389", "[2Jgone")
