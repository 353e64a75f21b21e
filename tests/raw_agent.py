"""An agent's Connect stream driven by hand, for tests that play a stolen or dying agent.

The real agent (``pta-agent run``) always behaves; these tests need one that holds its hello
back, acknowledges and vanishes, or answers nothing, with an enrolled agent's own files.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import TYPE_CHECKING

import grpc

from pta.v1 import agent_pb2, agent_pb2_grpc
from tests.support import AgentProcess

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support import BrokerProcess


class RawStream:
    """One Connect stream driven by hand: messages sent when the test says, answers collected."""

    def __init__(self, broker: BrokerProcess, credentials: grpc.ChannelCredentials) -> None:
        """Open the stream (TLS and the call); nothing is sent yet, not even a hello."""
        self._outgoing: queue.Queue[agent_pb2.AgentMessage | None] = queue.Queue()
        self.received: list[agent_pb2.BrokerMessage] = []
        self.error: grpc.RpcError | None = None
        self.ended_at: float | None = None
        self._channel = grpc.secure_channel(broker.agent, credentials)
        self._call = agent_pb2_grpc.AgentServiceStub(self._channel).Connect(
            iter(self._outgoing.get, None), timeout=60
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self.received.append(message)
        except grpc.RpcError as error:
            self.error = error
        self.ended_at = time.monotonic()

    def send(self, message: agent_pb2.AgentMessage) -> None:
        """Send one message on the stream."""
        self._outgoing.put(message)

    def hello(self, agent_id: str, max_in_flight: int = 1) -> None:
        """Send the hello."""
        self.send(
            agent_pb2.AgentMessage(
                hello=agent_pb2.Hello(agent_id=agent_id, max_in_flight=max_in_flight)
            )
        )

    @property
    def welcomed(self) -> bool:
        """Whether the broker welcomed this stream."""
        return any(m.HasField("welcome") for m in self.received)

    def validations(self) -> list[agent_pb2.ValidationRequest]:
        """Every validation request received so far."""
        return [
            r for m in self.received if m.HasField("validations") for r in m.validations.requests
        ]

    def close(self) -> None:
        """End the stream from this side and wait for the reader."""
        self._outgoing.put(None)
        self._call.cancel()
        self._reader.join(10)
        self._channel.close()


def enrolled(broker: BrokerProcess, tenant: str, state_dir: Path) -> str:
    """Enrol an agent into ``state_dir`` without running it; return its id."""
    AgentProcess.enrol(broker, tenant, state_dir)
    agent_id: str = json.loads((state_dir / "agent.json").read_text())["agent_id"]
    return agent_id
