"""The agent's stream writer (``agent/link.py``): acknowledgements first, in few messages.

The writer runs against a fake call that records each message and lets the test see what was
already on the stream when a batch was told it may reach the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import grpc

from agent.capacity import Capacity
from agent.link import Link, Outgoing, _Ack, _Control
from pta.v1 import agent_pb2, outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

Outcome = outcome_pb2.Outcome


class FakeCall:
    """Records written messages; each write yields to the loop, as a real one may."""

    def __init__(self) -> None:
        """Start with nothing written."""
        self.written: list[agent_pb2.AgentMessage] = []

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        """Record ``message`` once the write has 'returned'."""
        await asyncio.sleep(0)
        self.written.append(message)


def _result(request_id: str) -> agent_pb2.ValidationResult:
    return agent_pb2.ValidationResult(request_id=request_id, outcome=Outcome.SUCCESS)


def _bare_link() -> Any:
    """A link with only what its reader and writer read: no batch being checked."""
    link: Any = Link.__new__(Link)
    link._checking = 0
    link._capacity = Capacity(32)
    return link


async def _write_all(items: Iterable[Outgoing], *, acks_in_results: bool) -> FakeCall:
    """Queue ``items``, let the writer drain them, then stop it."""
    call = FakeCall()
    outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
    for item in items:
        outbox.put_nowait(item)
    link = _bare_link()
    writer = asyncio.create_task(link._write(call, outbox, 60.0, acks_in_results=acks_in_results))
    for _ in range(20):
        await asyncio.sleep(0)
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    return call


class TestWriter:
    """What goes on the stream, in which message, and when a batch may be checked."""

    async def test_acks_ride_with_results(self) -> None:
        """Results and acknowledgements waiting together: one message, acks in it."""
        first, second = _Ack(["r3", "r4"]), _Ack(["r5"])
        call = await _write_all(
            [[_result("r1")], first, [_result("r2")], second], acks_in_results=True
        )
        assert len(call.written) == 1
        results = call.written[0].results
        assert list(results.acks) == ["r3", "r4", "r5"]
        assert [r.request_id for r in results.results] == ["r1", "r2"]
        assert first.written.is_set()
        assert second.written.is_set()

    async def test_acks_alone_when_no_results_wait(self) -> None:
        """Nothing to piggy-back on: the acknowledgements go at once, in one Acks message."""
        ack = _Ack(["r1"])
        call = await _write_all([ack, _Ack(["r2"])], acks_in_results=True)
        assert [m.WhichOneof("kind") for m in call.written] == ["acks"]
        assert list(call.written[0].acks.request_ids) == ["r1", "r2"]
        assert ack.written.is_set()

    async def test_older_broker_gets_acks_message(self) -> None:
        """A broker that did not say it reads Results.acks gets an Acks message first."""
        ack = _Ack(["r2"])
        call = await _write_all([[_result("r1")], ack], acks_in_results=False)
        assert [m.WhichOneof("kind") for m in call.written] == ["acks", "results"]
        assert list(call.written[0].acks.request_ids) == ["r2"]
        assert list(call.written[1].results.acks) == []
        assert ack.written.is_set()

    async def test_batch_waits_for_its_acknowledgement(self) -> None:
        """``written`` is set only after the write carrying the acknowledgement returned."""
        call = FakeCall()
        outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        ack = _Ack(["r1"])
        seen_on_stream: list[int] = []

        async def check() -> None:
            await ack.written.wait()
            seen_on_stream.append(len(call.written))

        waiter = asyncio.create_task(check())
        outbox.put_nowait([_result("r0")])
        outbox.put_nowait(ack)
        link = _bare_link()
        writer = asyncio.create_task(link._write(call, outbox, 60.0, acks_in_results=True))
        await waiter
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        assert seen_on_stream == [1]
        assert list(call.written[0].results.acks) == ["r1"]

    async def test_controls_go_as_they_are(self) -> None:
        """A draining notice is its own message."""
        draining = agent_pb2.AgentMessage(draining=agent_pb2.Draining(reason="stopping"))
        call = await _write_all([_Control(draining)], acks_in_results=True)
        assert call.written == [draining]

    async def test_results_wait_briefly_while_others_are_checked(self) -> None:
        """With a batch still being checked, its results join the message if they come soon."""
        call = FakeCall()
        outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        link = _bare_link()
        link._checking = 1
        writer = asyncio.create_task(link._write(call, outbox, 60.0, acks_in_results=True))
        outbox.put_nowait([_result("r1")])
        await asyncio.sleep(0)
        outbox.put_nowait([_result("r2")])  # Within the coalescing window.
        link._checking = 0
        await asyncio.sleep(0.05)  # Far past the window: the message is written.
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        assert [r.request_id for r in call.written[0].results.results] == ["r1", "r2"]


class _FakeStream:
    """Hands the reader the given broker messages, then the end of the stream."""

    def __init__(self, *messages: agent_pb2.BrokerMessage) -> None:
        """Queue ``messages``."""
        self._messages = list(messages)

    async def read(self) -> object:
        """The next message; after the last, grpc's EOF once the loop had time to check."""
        if self._messages:
            return self._messages.pop(0)
        for _ in range(20):  # Tasks the reader started run before the stream ends.
            await asyncio.sleep(0)
        return grpc.aio.EOF


class _RecordingValidator:
    """Answers every request SUCCESS; records which batches were checked."""

    def __init__(self) -> None:
        """Nothing checked yet."""
        self.checked: list[list[str]] = []

    def open_batch(self, requests: list[agent_pb2.ValidationRequest]) -> list[str]:
        """'Open' a batch: its request ids."""
        return [r.request_id for r in requests]

    async def check_batch(self, opened: list[str]) -> list[agent_pb2.ValidationResult]:
        """'Check' it: record and answer."""
        self.checked.append(opened)
        return [_result(request_id) for request_id in opened]

    def forget(self, opened: list[str]) -> None:
        """Nothing to forget."""


async def _read_all(*, acks: bool) -> tuple[list[Outgoing], _RecordingValidator]:
    """Run the reader over one batch of two requests; return what it queued to write."""
    batch = agent_pb2.BrokerMessage(
        validations=agent_pb2.Validations(
            requests=[agent_pb2.ValidationRequest(request_id=r) for r in ("r1", "r2")]
        )
    )
    link: Any = _bare_link()
    link._validator = _RecordingValidator()
    outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
    with contextlib.suppress(BaseExceptionGroup):
        async with asyncio.TaskGroup() as group:
            await link._read(_FakeStream(batch), group, outbox, acks=acks)
    queued = []
    while not outbox.empty():
        queued.append(outbox.get_nowait())
    return queued, link._validator


class TestReader:
    """A broker that counts lost requests gets no acknowledgements, and no wait for them."""

    async def test_checked_at_once_without_acks(self) -> None:
        """lost_requests_counted: the batch is checked without an acknowledgement."""
        queued, validator = await _read_all(acks=False)
        assert validator.checked == [["r1", "r2"]]
        assert not any(isinstance(item, _Ack) for item in queued)
        assert [r.request_id for item in queued if isinstance(item, list) for r in item] == [
            "r1",
            "r2",
        ]

    async def test_older_broker_gets_acknowledgement_first(self) -> None:
        """An older broker: an acknowledgement is queued, and nothing is checked until written."""
        queued, validator = await _read_all(acks=True)
        acks = [item for item in queued if isinstance(item, _Ack)]
        assert [ack.request_ids for ack in acks] == [["r1", "r2"]]
        assert validator.checked == [], "no write ran, so no acknowledgement was written"
