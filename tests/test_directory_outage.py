"""Directory failover and outages: fast UNAVAILABLE, never a wrong password, back by itself."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from pta.v1 import outcome_pb2
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess, wait_for
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
PASSWORD = secret("Ha-pw-8(")
#: The hung directory's agent waits this long for an LDAP answer (the default is 5 s).
RECEIVE_TIMEOUT = 2.0
#: How much later than due an answer may come on a busy machine.
LATE = 3.0


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


def _signs_in(broker: BrokerProcess, domain: str = "ha.example") -> bool:
    try:
        return broker.sign_in(f"hana@{domain}", PASSWORD, timeout=5).outcome == Outcome.SUCCESS
    except grpc.RpcError:
        return False


@pytest.fixture(scope="module")
def hung_directory() -> Iterator[Slapd]:
    """A slapd of its own, which a test stops (SIGSTOP) and lets run again."""
    with Slapd(users=[DirectoryUser(uid="hana", password=PASSWORD)]) as server:
        yield server


@pytest.fixture(scope="module")
def hang_agent(
    broker: BrokerProcess, hung_directory: Slapd, run_dir: Path
) -> Iterator[AgentProcess]:
    """An agent of tenant ``hang`` waiting 2 s for its directory's answers (TOML config)."""
    broker.add_tenant("hang", "hang.example")
    config = run_dir / "agent-hang.toml"
    config.write_text(
        f'[[directory]]\nurls = ["{hung_directory.url}"]\nbase_dn = "{hung_directory.base_dn}"\n'
        f"receive_timeout = {RECEIVE_TIMEOUT}\n"
    )
    agent = AgentProcess.start(broker, None, "hang", "agent-hang", "--config", str(config))
    yield agent
    agent.stop()


class TestHang:
    """A directory that hangs (stopped, not killed: it keeps its connections, answers nothing).

    No connection is refused or closed, so nothing fails fast: only the agent's receive
    timeout turns the silence into an answer, and it must, well before the sign-in deadline.
    """

    def test_hung_then_back(
        self, broker: BrokerProcess, hang_agent: AgentProcess, hung_directory: Slapd
    ) -> None:
        """Hung: UNAVAILABLE after the receive timeout (not the 10 s deadline). Back: works."""
        assert hung_directory.pid is not None
        assert broker.sign_in("hana@hang.example", PASSWORD).outcome == Outcome.SUCCESS
        os.kill(hung_directory.pid, signal.SIGSTOP)
        try:
            took = []
            for _ in range(2):  # The second finds the agent unharmed by the first.
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    broker.sign_in("hana@hang.example", PASSWORD, timeout=10)
                took.append(time.monotonic() - started)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "directory is unavailable" in str(caught.value.details())
        finally:
            os.kill(hung_directory.pid, signal.SIGCONT)
        # The first waited for the directory as long as the agent waits, and no longer.
        print(f"\nhung directory: answered UNAVAILABLE after {took} s")  # noqa: T201
        assert RECEIVE_TIMEOUT - 0.1 <= took[0] < RECEIVE_TIMEOUT + LATE, took
        assert took[1] < RECEIVE_TIMEOUT + LATE, took
        audit = [e for e in broker.log_events("signin.completed") if e.get("tenant") == "hang"]
        assert [(e["status"], e["outcome"]) for e in audit[-2:]] == [
            ("UNAVAILABLE", "DIRECTORY_UNAVAILABLE")
        ] * 2
        wait_for(
            lambda: _signs_in(broker, "hang.example"),
            timeout=30,
            what="sign-ins to work again once the directory runs",
        )
        assert hang_agent.process.poll() is None, "the agent was not restarted"
