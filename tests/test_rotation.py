"""Certificates that rotate themselves, revocation, expiry: with lifetimes of seconds."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from pta import tls
from pta.v1 import agent_pb2, agent_pb2_grpc, outcome_pb2
from tests.conftest import USERS
from tests.support import AgentProcess, BrokerProcess, SignInLoad, agent_credentials, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

Outcome = outcome_pb2.Outcome
AGENT_LIFETIME = "3s"
SERVER_LIFETIME = "4s"
LOAD_SECONDS = 10.0


@pytest.fixture(scope="module")
def rotating(run_dir: Path) -> Iterator[BrokerProcess]:
    """A broker whose agent certificates live 3 s and whose own certificate lives 4 s."""
    broker = BrokerProcess.start(
        run_dir,
        "broker-rotating",
        "--agent-cert-lifetime",
        AGENT_LIFETIME,
        "--server-cert-lifetime",
        SERVER_LIFETIME,
    )
    broker.add_tenant("rot", "rot.example")
    yield broker
    broker.stop()


def _serial(path: Path) -> str:
    return tls.serial_hex(tls.load_cert(path.read_bytes()))


class TestRotationUnderLoad:
    """Sign-ins never fail while agent and broker certificates rotate underneath them."""

    def test_no_sign_in_lost_across_rotations(self, rotating: BrokerProcess, slapd: Slapd) -> None:
        """Continuous sign-ins over several rotations: zero failures, a new serial each time."""
        agent = AgentProcess.start(rotating, slapd, "rot", "agent-rot")
        first_serial = _serial(agent.state_dir / "tls.pem")
        load = SignInLoad(rotating, "rot.example", LOAD_SECONDS)
        try:
            load.run_threads(4)
            renewals = [
                e for e in rotating.log_events("agent.renewed") if e["agent_id"] == agent.agent_id
            ]
            server_rotations = rotating.log_events("broker.server_certificate_rotated")
        finally:
            agent.stop()
        assert load.failures == []
        assert load.answered > 100
        assert len(renewals) >= 3, renewals
        serials = [first_serial] + [str(e["serial"]) for e in renewals]
        assert len(set(serials)) == len(serials), "every renewal gives a new serial"
        assert [e["old_serial"] for e in renewals] == serials[:-1], "each renews the newest"
        assert len(server_rotations) >= 2, "the broker's own certificate rotated during the run"
        print(  # noqa: T201 - the figure the closing note quotes
            f"\nrotation: {load.answered} sign-ins, {len(load.failures)} failed, "
            f"{len(renewals)} agent rotations, {len(server_rotations)} server rotations"
        )


class TestExpiry:
    """An expired certificate is refused, and the agent says what to do without spinning."""

    def test_expired_agent_waits_for_enrolment(
        self, rotating: BrokerProcess, slapd: Slapd, run_dir: Path
    ) -> None:
        """The agent logs the re-enrol command once, and does not dial the broker."""
        state = run_dir / "agent-expired"
        AgentProcess.enrol(rotating, "rot", state)
        time.sleep(3.6)  # Past the 3 s lifetime (plus its 0.3 s backdating).

        with grpc.secure_channel(rotating.agent, agent_credentials(state)) as channel:
            request = agent_pb2.RenewRequest()
            with pytest.raises(grpc.RpcError) as caught:
                agent_pb2_grpc.AgentServiceStub(channel).Renew(request, timeout=5)
        # Refused in the TLS handshake, before any handler: the peer sees no service.
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        log_path = run_dir / "agent-expired.log"
        process = AgentProcess.launch(state, slapd, log_path)
        try:
            wait_for(lambda: "agent.certificate_expired" in log_path.read_text())
            time.sleep(2)
        finally:
            process.terminate()
            process.wait(10)
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if "{" in line]
        expired = [e for e in lines if e["event"] == "agent.certificate_expired"]
        assert len(expired) == 1, "it waits instead of retrying in a loop"
        assert "pta-agent enroll" in expired[0]["action"]
        assert not [e for e in lines if e["event"].startswith("link.")]


@pytest.fixture
def revocable(broker: BrokerProcess, slapd: Slapd) -> Iterator[AgentProcess]:
    """An agent of tenant ``rev`` on the main broker."""
    if "rev" not in broker.cli("tenant", "list").stdout:
        broker.add_tenant("rev", "rev.example")
    agent = AgentProcess.start(broker, slapd, "rev", "agent-rev")
    yield agent
    agent.stop()


class TestRevocation:
    """A revoked agent is cut off at once, and its certificates never work again."""

    def test_revoke_cuts_stream_and_refuses_renewal(
        self, broker: BrokerProcess, revocable: AgentProcess
    ) -> None:
        """Revocation ends the live stream within a second and refuses every later call."""
        assert broker.sign_in("alice@rev.example", USERS["alice"]).outcome == Outcome.SUCCESS
        revoked_at = time.monotonic()
        broker.cli("agent", "revoke", revocable.agent_id)
        wait_for(
            lambda: any(
                e.get("agent_id") == revocable.agent_id and "revoked" in str(e.get("reason"))
                for e in broker.log_events("agent.disconnected")
            ),
            timeout=5,
            what="the revoked agent's stream to be cut",
        )
        assert time.monotonic() - revoked_at < 2.0
        with pytest.raises(grpc.RpcError) as caught:
            broker.sign_in("alice@rev.example", USERS["alice"], timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        with (
            grpc.secure_channel(broker.agent, revocable.credentials()) as channel,
            pytest.raises(grpc.RpcError) as renewal,
        ):
            agent_pb2_grpc.AgentServiceStub(channel).Renew(agent_pb2.RenewRequest(), timeout=5)
        assert renewal.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in str(renewal.value.details())
        wait_for(
            lambda: "this agent has been revoked" in revocable.log_path.read_text(),
            what="the agent to be refused on reconnect",
        )
        listing = {a["id"]: a for a in json.loads(broker.cli("agents", "list", "--json").stdout)}
        assert listing[revocable.agent_id]["revoked"] is True


class TestAgentsList:
    """Operators see every agent, its certificate and its live stream."""

    @pytest.mark.usefixtures("agent")
    def test_list_shows_connected_agent(self, broker: BrokerProcess, agent: AgentProcess) -> None:
        """The listing has id, tenant, domains, state, version, serial, expiry, load, heartbeat."""
        wait_for(  # The broker reports its streams to the store every second.
            lambda: broker.agents().get(agent.agent_id, {}).get("connected") is True,
            what="the broker to report the agent's stream",
        )
        row = broker.agents()[agent.agent_id]
        assert row["tenant"] == "acme"
        assert row["connected"] is True
        assert row["domains"] == ["example.com"]
        assert row["serial"] == _serial(agent.state_dir / "tls.pem")
        assert row["version"]
        assert row["in_flight"] == 0
        assert row["last_heartbeat"] > time.time() - 60
        assert row["not_after"]
        text = broker.cli("agents", "list").stdout
        assert agent.agent_id in text
        assert "connected" in text
