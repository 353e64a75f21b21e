"""Directory failover and outages: fast UNAVAILABLE, never a wrong password, back by itself."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
import pytest

from pta.slapd import DirectoryUser, Slapd, free_port
from pta.v1 import outcome_pb2
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

Outcome = outcome_pb2.Outcome
PASSWORD = secret("Ha-pw-8(")


@pytest.fixture(scope="module")
def ha_directory() -> Iterator[Slapd]:
    """A slapd of its own, so that stopping it disturbs no other test."""
    with Slapd(users=[DirectoryUser(uid="hana", password=PASSWORD)]) as server:
        yield server


@pytest.fixture(scope="module")
def ha_agent(broker: BrokerProcess, ha_directory: Slapd) -> Iterator[AgentProcess]:
    """An agent of tenant ``ha`` whose first directory URL has nothing behind it."""
    broker.add_tenant("ha", "ha.example")
    dead = f"ldap://127.0.0.1:{free_port()}"
    agent = AgentProcess.start(
        broker,
        None,
        "ha",
        "agent-ha",
        *("--ldap-url", dead, "--ldap-url", ha_directory.url, "--base-dn", ha_directory.base_dn),
    )
    yield agent
    agent.stop()


class TestFailover:
    """Several directory URLs: a dead one is skipped."""

    def test_dead_first_url_is_skipped(self, broker: BrokerProcess, ha_agent: AgentProcess) -> None:
        """With the first server down, the second answers."""
        del ha_agent
        assert broker.sign_in("hana@ha.example", PASSWORD).outcome == Outcome.SUCCESS


class TestOutage:
    """A directory that is down is UNAVAILABLE at once, and is not a wrong password."""

    def test_down_then_back(
        self, broker: BrokerProcess, ha_agent: AgentProcess, ha_directory: Slapd
    ) -> None:
        """Down: UNAVAILABLE within a second, audited as such. Back: works, no restart."""
        assert broker.sign_in("hana@ha.example", PASSWORD).outcome == Outcome.SUCCESS
        ha_directory.pause()
        try:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                broker.sign_in("hana@ha.example", PASSWORD, timeout=10)
            elapsed = time.monotonic() - started
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "directory is unavailable" in str(caught.value.details())
            assert elapsed < 2.0, elapsed
        finally:
            ha_directory.resume()
        audit = [e for e in broker.log_events("signin.completed") if e["user"] == "hana@ha.example"]
        assert audit[-1]["status"] == "UNAVAILABLE"
        assert audit[-1]["outcome"] == "DIRECTORY_UNAVAILABLE"
        assert all(e.get("outcome") != "INVALID_CREDENTIALS" for e in audit)
        wait_for(
            lambda: _signs_in(broker),
            timeout=30,
            what="sign-ins to work again once the directory is back",
        )
        assert ha_agent.process.poll() is None, "the agent was not restarted"


def _signs_in(broker: BrokerProcess) -> bool:
    try:
        return broker.sign_in("hana@ha.example", PASSWORD, timeout=5).outcome == Outcome.SUCCESS
    except grpc.RpcError:
        return False
