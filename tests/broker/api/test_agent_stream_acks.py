"""The broker's side of an agent stream (``broker/api/agent_stream.py``) with a real dispatcher.

The reader takes a scripted stream of agent messages (acks inside results); the writer writes
to a recording context (a job given up before it was sent, the cluster's brokers told).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from broker import cluster
from broker.api.agent_stream import AgentStream
from broker.dispatch.dispatcher import Dispatcher
from broker.dispatch.jobs import Connection, Job
from pta import sealing
from pta.errors import NoAgentAvailable, Unavailable
from pta.v1 import agent_pb2, outcome_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TENANT = "acme"
DOMAIN = "example.com"
KEY = sealing.generate_key().public_key()


def _conn(connection_id: str) -> Connection:
    return Connection(
        connection_id=connection_id,
        agent_id=f"agent-{connection_id}",
        tenant=TENANT,
        domains=frozenset({DOMAIN}),
        capacity=4,
        envelope_key=KEY,
    )


def _job(request_id: str, *conns: Connection) -> Job:
    loop = asyncio.get_running_loop()
    return Job(
        request_id=request_id,
        tenant=TENANT,
        domain=DOMAIN,
        deadline=loop.time() + 30,
        deadline_unix_ms=0,
        envelopes={c.connection_id: b"sealed" for c in conns},
        future=loop.create_future(),
    )


def _service(dispatcher: Dispatcher) -> Any:
    """The agent stream's reader and writer over ``dispatcher`` (no store: no reports here)."""
    return AgentStream(
        store=None,  # type: ignore[arg-type]
        dispatcher=dispatcher,
        heartbeat_interval=60.0,
    )


async def _stream(*messages: agent_pb2.AgentMessage) -> AsyncIterator[agent_pb2.AgentMessage]:
    for message in messages:
        yield message
    await asyncio.sleep(3600)  # The agent stays connected.


class TestAcksInResults:
    """Acknowledgements carried by a results message count as acknowledgements."""

    async def test_welcome_says_so(self) -> None:
        """The flag the agent waits for before it piggy-backs (field of Welcome)."""
        assert "acks_in_results" in agent_pb2.Welcome.DESCRIPTOR.fields_by_name

    async def test_acked_in_results_is_not_sent_again(self) -> None:
        """r2, acknowledged inside r1's results, is UNAVAILABLE when the agent is lost."""
        dispatcher = Dispatcher()
        a, b = _conn("a"), _conn("b")
        dispatcher.attach(a)
        dispatcher.attach(b)
        first, second = _job("r1", a, b), _job("r2", a, b)
        dispatcher.submit(first)
        dispatcher.submit(second)
        assert {first.connection_id, second.connection_id} == {"a", "b"}
        mine = first if first.connection_id == "a" else second
        other = second if mine is first else first
        service = _service(dispatcher)
        results = agent_pb2.Results(acks=[mine.request_id])
        reader = asyncio.create_task(
            service._receive(_stream(agent_pb2.AgentMessage(results=results)), a)
        )
        for _ in range(5):
            await asyncio.sleep(0)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        assert mine.acked
        assert not other.acked
        dispatcher.detach(a)
        error = mine.future.exception()
        assert isinstance(error, Unavailable)
        assert not isinstance(error, NoAgentAvailable)

    async def test_acks_read_before_results(self) -> None:
        """A job acknowledged and answered in the same message gets its answer."""
        dispatcher = Dispatcher()
        a = _conn("a")
        dispatcher.attach(a)
        job = _job("r1", a)
        dispatcher.submit(job)
        service = _service(dispatcher)
        result = agent_pb2.ValidationResult(request_id="r1", outcome=outcome_pb2.SUCCESS)
        message = agent_pb2.AgentMessage(results=agent_pb2.Results(results=[result], acks=["r1"]))
        reader = asyncio.create_task(service._receive(_stream(message), a))
        answer = await asyncio.wait_for(job.future, 5)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        assert answer.outcome == outcome_pb2.SUCCESS
        assert a.in_flight == {}


class _Context:
    """What ``_send`` writes to: records the messages."""

    def __init__(self) -> None:
        self.sent: list[agent_pb2.BrokerMessage] = []

    async def write(self, message: agent_pb2.BrokerMessage) -> None:
        self.sent.append(message)


class TestGivenUpBeforeSent:
    """A job whose caller gave up while it waited to be written is taken back, not leaked."""

    async def test_slot_freed_and_settled(self) -> None:
        """Withdrawn during the writer's coalescing pause: never sent, slot free, settled."""
        dispatcher = Dispatcher()
        conn = _conn("a")
        dispatcher.attach(conn)
        fates: list[int | None] = []
        busy, given_up = _job("r0", conn), _job("r1", conn)
        given_up.settled = fates.append
        service = _service(dispatcher)
        context = _Context()
        sender = asyncio.create_task(service._send(context, conn))
        dispatcher.submit(busy)
        await asyncio.sleep(0.01)  # r0 is written; the agent has not answered it.
        dispatcher.submit(given_up)
        await asyncio.sleep(0)  # The writer takes r1 and pauses to coalesce.
        dispatcher.withdraw(given_up)
        await asyncio.sleep(0.05)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        sent = [r.request_id for m in context.sent for r in m.validations.requests]
        assert sent == ["r0"]
        assert list(conn.in_flight) == ["r0"]
        assert fates == [None]


class TestBrokersTold:
    """Every attached stream is told the cluster's brokers: the newest set, after the work."""

    async def test_written_after_the_work_newest_only(self) -> None:
        """Two sets and a job waiting together: the job's message, then only the newer set."""
        dispatcher = Dispatcher()
        conn = _conn("a")
        dispatcher.attach(conn)
        announce = cluster.announcer(dispatcher)
        announce(("h:1",))
        dispatcher.submit(_job("r1", conn))
        announce(("h:1", "h:2"))
        service = _service(dispatcher)
        context = _Context()
        sender = asyncio.create_task(service._send(context, conn))
        await asyncio.sleep(0.05)  # Far past the coalescing window: both are written.
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        assert [m.WhichOneof("kind") for m in context.sent] == ["validations", "brokers"]
        assert list(context.sent[1].brokers.agent_endpoints) == ["h:1", "h:2"]
