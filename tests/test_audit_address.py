"""The audit records the address the broker's decisions used, not one a caller claimed.

Seen before: `pta-signin --client-ip` from a caller that is not a `--trusted-proxy` was
rightly not believed by the rate limit and the lockout, yet the audit event recorded the
claimed address as `client_ip` (and its location as familiar or not from it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pta.v1 import outcome_pb2
from tests.conftest import DOMAIN, USERS
from tests.support import AgentProcess, BrokerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

CLAIMED = "198.51.100.23"


def _event(broker: BrokerProcess, request_id: str) -> dict[str, object]:
    (event,) = [
        e for e in broker.log_events("signin.completed") if e.get("request_id") == request_id
    ]
    return event


@pytest.fixture(scope="module")
def behind_proxy(run_dir: Path, slapd: Slapd) -> Iterator[BrokerProcess]:
    """A broker that believes 127.0.0.1's client_ip, with an agent for acme.example.com."""
    broker = BrokerProcess.start(run_dir, "broker-proxy", "--trusted-proxy", "127.0.0.1/32")
    broker.add_tenant("acme", DOMAIN)
    agent = AgentProcess.start(broker, slapd, "acme", "agent-proxy")
    yield broker
    agent.stop()
    broker.stop()


class TestAuditAddress:
    """client_ip is the address decided on; a claim that did not count is kept apart."""

    @pytest.mark.usefixtures("agent")
    def test_claim_from_an_untrusted_caller(self, broker: BrokerProcess) -> None:
        """Not a trusted proxy: the caller's own address is recorded, the claim beside it."""
        reply = broker.sign_in(f"alice@{DOMAIN}", USERS["alice"], client_ip=CLAIMED)
        assert reply.outcome == outcome_pb2.SUCCESS
        event = _event(broker, reply.request_id)
        assert event["client_ip"] == "127.0.0.1"
        assert event["claimed_client_ip"] == CLAIMED

    def test_claim_from_a_trusted_proxy(self, behind_proxy: BrokerProcess) -> None:
        """A trusted proxy's client_ip is the address decided on: recorded as client_ip."""
        reply = behind_proxy.sign_in(f"alice@{DOMAIN}", USERS["alice"], client_ip=CLAIMED)
        assert reply.outcome == outcome_pb2.SUCCESS
        event = _event(behind_proxy, reply.request_id)
        assert event["client_ip"] == CLAIMED
        assert "claimed_client_ip" not in event
