"""``broker/api/signin_stream.py``'s session: how a stream ends around a broker shutdown.

The sign-in itself is a stand-in here (the session's control flow is what is tested); the
real path runs end to end in ``tests/test_signin_stream.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from broker.api.signin_stream import SignInStreamSession
from pta.errors import Unavailable
from pta.v1 import outcome_pb2, signin_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _signed_in(
    request: signin_pb2.SignInRequest, *, peer: str, deadline: float
) -> signin_pb2.SignInResponse:
    del request, peer, deadline
    return signin_pb2.SignInResponse(outcome=outcome_pb2.SUCCESS)


def _session() -> SignInStreamSession:
    return SignInStreamSession(
        _signed_in, peer="ipv4:127.0.0.1:5", timeout=5.0, stream_remaining=None
    )


async def _one_then_wait() -> AsyncIterator[signin_pb2.SignInBatch]:
    yield signin_pb2.SignInBatch(items=[signin_pb2.SignInItem(id=1)])
    await asyncio.sleep(3600)


async def _one_then_close() -> AsyncIterator[signin_pb2.SignInBatch]:
    yield signin_pb2.SignInBatch(items=[signin_pb2.SignInItem(id=1)])


class TestShutdown:
    """A broker shutdown ends streams at once, and says UNAVAILABLE only when it cut one."""

    async def test_stream_begun_while_closing_ends_at_once(self) -> None:
        """Closing before the stream's first read: UNAVAILABLE now, not a hang."""
        session = _session()
        session.stop_reading()
        written: list[signin_pb2.SignInAnswers] = []

        async def write(answers: signin_pb2.SignInAnswers) -> None:
            written.append(answers)

        with pytest.raises(Unavailable):
            async with asyncio.timeout(5):
                await session.run(_one_then_wait(), write)
        assert written == []

    async def test_a_drained_stream_ends_ok(self) -> None:
        """Half-closed and answered before the shutdown: ends normally."""
        session = _session()
        written: list[signin_pb2.SignInAnswers] = []

        async def write(answers: signin_pb2.SignInAnswers) -> None:
            written.append(answers)
            session.stop_reading()  # Shutdown arrives after the client half-closed.

        async with asyncio.timeout(5):
            await session.run(_one_then_close(), write)
        assert [a.id for message in written for a in message.answers] == [1]

    async def test_closing_before_the_reader_ran_ends_at_once(self) -> None:
        """The shutdown comes between the stream's start and its reader's first step.

        A task cancelled before it runs never enters its body, so the reader's own clean-up
        (reading is over: wake the writer) never ran, and the stream waited for nothing.
        """
        session = _session()
        written: list[signin_pb2.SignInAnswers] = []

        async def write(answers: signin_pb2.SignInAnswers) -> None:
            written.append(answers)

        running = asyncio.create_task(session.run(_one_then_wait(), write))
        await asyncio.sleep(0)  # run() has made its tasks; none has had its first step.
        session.stop_reading()
        with pytest.raises(Unavailable, match="shutting down"):
            async with asyncio.timeout(5):
                await running
        assert written == []


class TestIdle:
    """A stream with nothing in flight that sends nothing for its idle time is ended."""

    async def test_idle_stream_ends_unavailable(self) -> None:
        """One item answered, then silence: UNAVAILABLE after about the idle time."""
        session = SignInStreamSession(
            _signed_in, peer="ipv4:127.0.0.1:5", timeout=5.0, stream_remaining=None, idle=0.2
        )
        written: list[signin_pb2.SignInAnswers] = []

        async def write(answers: signin_pb2.SignInAnswers) -> None:
            written.append(answers)

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Unavailable, match=r"nothing was sent for 0\.2 s"):
            async with asyncio.timeout(5):
                await session.run(_one_then_wait(), write)
        assert [a.id for message in written for a in message.answers] == [1]
        assert 0.2 <= loop.time() - started < 2

    async def test_slow_answer_is_not_idle(self) -> None:
        """An item whose answer takes longer than the idle time keeps the stream open."""

        async def slow(
            request: signin_pb2.SignInRequest, *, peer: str, deadline: float
        ) -> signin_pb2.SignInResponse:
            await asyncio.sleep(0.5)
            return await _signed_in(request, peer=peer, deadline=deadline)

        session = SignInStreamSession(
            slow, peer="ipv4:127.0.0.1:5", timeout=5.0, stream_remaining=None, idle=0.2
        )
        written: list[signin_pb2.SignInAnswers] = []

        async def write(answers: signin_pb2.SignInAnswers) -> None:
            written.append(answers)

        with pytest.raises(Unavailable, match="nothing was sent"):
            async with asyncio.timeout(5):
                await session.run(_one_then_wait(), write)
        assert [a.id for message in written for a in message.answers] == [1]

    async def test_answers_the_client_has_not_taken_are_not_idle(self) -> None:
        """A write held up past the idle time (a client not reading yet) keeps the stream.

        The answer is out of the session's queue but not yet taken by the client: the
        client is waiting for it, and may send more once it has it.
        """
        session = SignInStreamSession(
            _signed_in, peer="ipv4:127.0.0.1:5", timeout=5.0, stream_remaining=None, idle=0.2
        )
        written: list[signin_pb2.SignInAnswers] = []
        taken = asyncio.Event()

        async def write(answers: signin_pb2.SignInAnswers) -> None:
            if not written:
                await asyncio.sleep(0.6)  # The client reads only now.
            written.append(answers)
            taken.set()

        async def requests() -> AsyncIterator[signin_pb2.SignInBatch]:
            yield signin_pb2.SignInBatch(items=[signin_pb2.SignInItem(id=1)])
            await taken.wait()
            yield signin_pb2.SignInBatch(items=[signin_pb2.SignInItem(id=2)])
            await asyncio.sleep(3600)

        with pytest.raises(Unavailable, match="nothing was sent"):
            async with asyncio.timeout(5):
                await session.run(requests(), write)
        assert [a.id for message in written for a in message.answers] == [1, 2]
