"""A second SIGTERM stops a draining program at once, even with a sign-in held in flight.

The first signal drains: the agent answers what it was sent (README, "When things fail": "A
second signal stops it at once"), the broker answers its sign-ins in flight within its grace.
A directory that stopped answering (SIGSTOP: the connection is open, nothing comes back)
holds a sign-in at the agent for as long as the agent's receive timeout (60 s here), so the
drain cannot finish by itself: the second signal has to end it. The broker then exits
``128 + signum`` (``broker/__main__.py``, as grpclib's ``graceful_exit``).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest

from pta.v1 import outcome_pb2
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess, unread_by, wait_for
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
PASSWORD = secret("Hold-pw-1!")
#: How long a program may take to end once told twice (its drain would take a minute).
AT_ONCE = 3.0
#: How long a drain is watched to be still going on.
STILL_DRAINING = 1.0


@dataclass
class Holding:
    """A broker, an agent and its directory, which the test can stop."""

    broker: BrokerProcess
    agent: AgentProcess
    directory: Slapd

    def attempt(self) -> str:
        """Sign in once: the outcome's or the status's name."""
        try:
            reply = self.broker.sign_in("hold@holding.example", PASSWORD, timeout=60)
        except grpc.RpcError as error:
            return str(error.code().name)
        return str(Outcome.Name(reply.outcome))

    def freeze_directory(self) -> None:
        """Stop the directory's process: it keeps its connections and answers nothing."""
        assert self.directory.pid is not None
        os.kill(self.directory.pid, signal.SIGSTOP)

    def thaw_directory(self) -> None:
        """Let the directory run again."""
        assert self.directory.pid is not None
        os.kill(self.directory.pid, signal.SIGCONT)

    def wait_held(self) -> None:
        """Wait until a sign-in is at the agent and its request at the stopped directory."""
        self.broker.wait_in_flight(self.agent.agent_id, 1)
        wait_for(lambda: unread_by(self.directory.port) > 0, what="a request at the directory")


@pytest.fixture(scope="module")
def hold_directory() -> Iterator[Slapd]:
    """A slapd of its own: these tests stop it."""
    with Slapd(users=[DirectoryUser(uid="hold", password=PASSWORD)]) as server:
        yield server


@pytest.fixture
def holding(
    run_dir: Path, hold_directory: Slapd, request: pytest.FixtureRequest
) -> Iterator[Holding]:
    """A broker (grace and sign-in timeout 60 s) and an agent that waits 60 s for LDAP."""
    name = "signal-" + request.node.name.removeprefix("test_")[:24]
    broker = BrokerProcess.start(
        run_dir, f"broker-{name}", "--grace", "60", "--signin-timeout", "60s"
    )
    broker.add_tenant("holding", "holding.example")
    config = run_dir / f"agent-{name}.toml"
    config.write_text(
        f'[[directory]]\nurls = ["{hold_directory.url}"]\nbase_dn = "{hold_directory.base_dn}"\n'
        "receive_timeout = 60\n"
    )
    agent = AgentProcess.start(broker, None, "holding", f"agent-{name}", "--config", str(config))
    held = Holding(broker=broker, agent=agent, directory=hold_directory)
    try:
        assert held.attempt() == "SUCCESS"  # Connected, the user's DN known, LDAP warm.
        yield held
    finally:
        held.thaw_directory()
        agent.stop()
        broker.stop()


class TestSecondSignal:
    """First signal: drain, held up by the sign-in in flight. Second: gone at once."""

    def test_agent(self, holding: Holding) -> None:
        """A draining agent holding a sign-in stops at once; the sign-in is answered."""
        holding.freeze_directory()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(holding.attempt)
            holding.wait_held()
            agent = holding.agent
            agent.process.send_signal(signal.SIGTERM)
            wait_for(lambda: agent.log_events("agent.stopping"), what="the agent to drain")
            wait_for(
                lambda: [
                    e
                    for e in holding.broker.log_events("agent.draining")
                    if e.get("agent_id") == agent.agent_id
                ],
                what="the broker to see the drain",
            )
            time.sleep(STILL_DRAINING)
            assert agent.process.poll() is None, "the first signal waits for the sign-in"
            assert not pending.done()
            told = time.monotonic()
            agent.process.send_signal(signal.SIGTERM)
            code = agent.process.wait(AT_ONCE + 10)
            took = time.monotonic() - told
            answer = pending.result(timeout=AT_ONCE + 10)
        assert took < AT_ONCE, took
        assert agent.log_events("agent.stopped_before_drained")
        assert code == 128 + signal.SIGTERM, "cut short: not the code of a finished drain"
        print(f"\nsecond signal: agent exited {code} after {took:.2f} s; sign-in {answer}")  # noqa: T201
        # The held sign-in gets a definite answer: its agent is gone (and it has no other).
        assert answer == "UNAVAILABLE"

    def test_broker(self, holding: Holding) -> None:
        """A broker draining a held sign-in exits at once with 128 + SIGTERM."""
        holding.freeze_directory()
        broker = holding.broker
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(holding.attempt)
            holding.wait_held()
            broker.process.send_signal(signal.SIGTERM)
            wait_for(lambda: broker.log_events("broker.stopping"), what="the broker to drain")
            time.sleep(STILL_DRAINING)
            assert broker.process.poll() is None, "the first signal waits for the sign-in"
            assert not pending.done()
            told = time.monotonic()
            broker.process.send_signal(signal.SIGTERM)
            code = broker.process.wait(AT_ONCE + 10)
            took = time.monotonic() - told
            answer = pending.result(timeout=AT_ONCE + 10)
        assert took < AT_ONCE, took
        assert code == 128 + signal.SIGTERM
        # The caller is not left waiting: its connection closed with the process.
        assert answer in {"UNAVAILABLE", "CANCELLED"}, answer
