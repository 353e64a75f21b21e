"""Which connections a sign-in is sealed to: one with room, two when it waits, again when gone.

The broker's cost per sign-in must not grow with the tenant's agents (issue 20): one HPKE seal
when an agent has room, two at most when the job must wait, and sealed again, from the check's
own frame, when every connection it was sealed to left before an agent had it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from broker.dispatch import checks
from broker.dispatch.dispatcher import SEALED_CANDIDATES, Dispatcher
from pta.errors import NoAgentAvailable
from tests.broker.dispatch.helpers import ANSWER, DOMAIN, TENANT, make_conn, make_job, taken

if TYPE_CHECKING:
    from broker.dispatch.jobs import Connection, Job

BUDGET = 5.0


def _busy(request_id: str, conn: Connection) -> Job:
    """A job keeping ``conn`` busy, due well after the checks here."""
    return make_job(request_id, conn, deadline=asyncio.get_running_loop().time() + 60)


def _start(dispatcher: Dispatcher, settled: list[int | None]) -> asyncio.Task[object]:
    return asyncio.create_task(
        checks.check(dispatcher, TENANT, DOMAIN, "r1", b"creds", BUDGET, settled=settled.append)
    )


class TestSealing:
    """One seal with room, two when waiting, never one per agent."""

    async def test_one_seal_when_an_agent_has_room(self) -> None:
        """Four agents with room: sealed to one, the least loaded."""
        dispatcher = Dispatcher()
        conns = [make_conn(name, capacity=2) for name in "abcd"]
        for conn in conns:
            dispatcher.attach(conn)
        dispatcher.submit(_busy("busy", conns[0]))  # a has less room now.
        await taken(conns[0])
        settled: list[int | None] = []
        check = _start(dispatcher, settled)
        job = await taken(conns[1])
        assert list(job.envelopes) == ["b"]
        assert dispatcher.complete(conns[1], "r1", ANSWER)
        assert await check == ANSWER
        assert settled == [ANSWER.outcome]

    async def test_two_seals_when_it_must_wait(self) -> None:
        """Every agent busy: sealed to two; it goes to the first of them to have room."""
        dispatcher = Dispatcher()
        conns = [make_conn(name) for name in "abcd"]
        for index, conn in enumerate(conns):
            dispatcher.attach(conn)
            dispatcher.submit(_busy(f"busy{index}", conn))
        check = _start(dispatcher, [])
        await asyncio.sleep(0)
        assert dispatcher.queued(TENANT) == 1
        for conn in conns:
            while not conn.outbox.empty():
                conn.outbox.get_nowait()
        first = conns[0]
        assert dispatcher.complete(first, "busy0", ANSWER)  # a has room: it takes the job.
        job = await taken(first)
        assert len(job.envelopes) == SEALED_CANDIDATES
        assert dispatcher.complete(first, "r1", ANSWER)
        assert await check == ANSWER


class TestSealedAgain:
    """Its connections gone before an agent had it: sealed to those there are now."""

    async def test_to_another_agent(self) -> None:
        """Sealed to a, a leaves before writing it: sealed to b, answered, settled once."""
        dispatcher = Dispatcher()
        a, b = make_conn("a"), make_conn("b")
        dispatcher.attach(a)
        dispatcher.attach(b)
        settled: list[int | None] = []
        check = _start(dispatcher, settled)
        assert list((await taken(a)).envelopes) == ["a"]
        dispatcher.detach(a)  # Never written: no agent had it.
        job = await taken(b)
        assert list(job.envelopes) == ["b"]
        assert dispatcher.complete(b, "r1", ANSWER)
        assert await check == ANSWER
        assert settled == [ANSWER.outcome]

    async def test_no_agent_left(self) -> None:
        """Its only agent leaves before writing it: NoAgentAvailable, settled once, as unsent."""
        dispatcher = Dispatcher()
        a = make_conn("a")
        dispatcher.attach(a)
        settled: list[int | None] = []
        check = _start(dispatcher, settled)
        await taken(a)
        dispatcher.detach(a)
        with pytest.raises(NoAgentAvailable):
            await check
        assert settled == [None]
