"""The values dispatch moves, and how a job settles: ``broker/dispatch/jobs.py``, fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import pytest

from broker.dispatch import checks
from broker.dispatch.jobs import MAY_HAVE_TRIED, AgentLost, Answer, Job
from pta.errors import DeadlineExceeded
from tests.broker.dispatch.helpers import (
    ANSWER,
    DOMAIN,
    NOW,
    TENANT,
    FakeClock,
    failure,
    make_conn,
    make_job,
    sent,
)

if TYPE_CHECKING:
    from broker.dispatch.dispatcher import Dispatcher


class TestAnswer:
    """An agent's verdict is a plain value."""

    def test_equal_and_immutable(self) -> None:
        """Answers with the same fields are equal, hashable, and cannot be changed."""
        answer = Answer(outcome=1, message="ok", agent_id="agent-a")
        assert answer == ANSWER
        assert hash(answer) == hash(ANSWER)
        with pytest.raises(dataclasses.FrozenInstanceError):
            answer.outcome = 2  # type: ignore[misc]


class TestJob:
    """A job knows whether it has its one answer."""

    async def test_done_follows_future(self) -> None:
        """``done`` is False until the future has a result, True after."""
        job = make_job("r1", make_conn("a"))
        assert not job.done
        job.future.set_result(ANSWER)
        assert job.done


class TestConnection:
    """A connection's own view: which domains it takes and how much room it has."""

    @pytest.mark.parametrize(
        ("domain", "draining", "expected"),
        [
            (DOMAIN, False, True),
            ("other.example", False, False),
            (DOMAIN, True, False),
        ],
        ids=["served-domain", "other-domain", "draining"],
    )
    def test_serves(self, domain: str, *, draining: bool, expected: bool) -> None:
        """A connection takes new jobs for its own domains only, and none while draining."""
        conn = make_conn("a")
        conn.draining = draining
        assert conn.serves(domain) is expected

    async def test_free_counts_in_flight(self) -> None:
        """Room is the announced capacity minus the jobs in flight."""
        conn = make_conn("a", capacity=3)
        assert conn.free == 3
        conn.in_flight["r1"] = make_job("r1", conn)
        assert conn.free == 2


class TestJobSettlement:
    """Each job reports once what became of it: the lockout counts what agents really did."""

    def _watched(self, job: Job) -> list[int | None]:
        fates: list[int | None] = []
        job.settled = fates.append
        return fates

    async def test_answer_after_the_caller_gave_up_still_settles(
        self, dispatcher: Dispatcher
    ) -> None:
        """An agent's late answer (the caller timed out) is still reported, once."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        fates = self._watched(job)
        dispatcher.submit(job)
        dispatcher.withdraw(job)  # The caller's deadline passed; the agent still has it.
        assert fates == []
        wrong = Answer(outcome=2, message="", agent_id="agent-a")
        assert dispatcher.complete(conn, "r1", wrong)
        assert fates == [2]
        dispatcher.complete(conn, "r1", wrong)
        assert fates == [2]

    async def test_withdrawn_before_sending_settles_none(self, dispatcher: Dispatcher) -> None:
        """A job that never left the queue was checked by no one."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        dispatcher.submit(make_job("busy", conn))
        job = make_job("r2", conn)
        fates = self._watched(job)
        dispatcher.submit(job)
        dispatcher.withdraw(job)
        assert fates == [None]

    async def test_expired_in_the_queue_settles_none(
        self, dispatcher: Dispatcher, clock: FakeClock
    ) -> None:
        """A job whose deadline passed while queued is dropped unsent, and says so."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        first = make_job("busy", conn)
        dispatcher.submit(first)
        job = make_job("r3", conn, deadline=NOW + 1)
        fates = self._watched(job)
        dispatcher.submit(job)
        clock.now = NOW + 2
        dispatcher.complete(conn, "busy", ANSWER)
        assert isinstance(failure(job), DeadlineExceeded)
        assert job.settle_for_caller()
        assert fates == [None]
        assert sent(conn) == ["busy"]

    async def test_lost_agent_settles_may_have_tried(self, dispatcher: Dispatcher) -> None:
        """An acknowledged job of a lost agent: nobody can say what it did; it may have tried."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r4", conn)
        fates = self._watched(job)
        dispatcher.submit(job)
        dispatcher.acknowledge(conn, ["r4"])
        dispatcher.detach(conn)
        assert isinstance(failure(job), AgentLost)
        assert job.settle_for_caller()
        assert fates == [MAY_HAVE_TRIED]

    async def test_a_caller_that_left_hands_its_accounting_to_the_job(
        self, dispatcher: Dispatcher
    ) -> None:
        """Gone before its agent was lost: the job is settled where it ends, once."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r4", conn)
        fates = self._watched(job)
        dispatcher.submit(job)
        job.written = True  # On the agent's stream.
        dispatcher.withdraw(job)  # The caller's deadline passed; the agent still has it.
        assert not job.settle_for_caller()
        dispatcher.detach(conn)
        assert fates == [MAY_HAVE_TRIED]

    async def test_check_settles_on_the_callers_task(self, dispatcher: Dispatcher) -> None:
        """Through :meth:`Dispatcher.check`: the answer's accounting runs on the caller's task."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        tasks: list[asyncio.Task[object] | None] = []

        def settled(outcome: int | None) -> None:
            tasks.append(asyncio.current_task())
            assert outcome == ANSWER.outcome

        caller = asyncio.create_task(
            checks.check(dispatcher, TENANT, DOMAIN, "r6", b"credentials", 5.0, settled=settled)
        )
        job = await conn.outbox.get()
        assert isinstance(job, Job)

        async def agent_answers() -> None:
            assert dispatcher.complete(conn, job.request_id, ANSWER)

        answering = asyncio.create_task(agent_answers())
        assert await caller == ANSWER
        await answering
        assert tasks == [caller], "counted on the caller's task, not the agent stream's"

    async def test_requeued_job_settles_when_answered(self, dispatcher: Dispatcher) -> None:
        """An unacknowledged job moves to another agent and settles with that one's answer."""
        a, b = make_conn("a"), make_conn("b")
        dispatcher.attach(a)
        job = make_job("r5", a, b)
        fates = self._watched(job)
        dispatcher.submit(job)
        dispatcher.attach(b)
        dispatcher.detach(a)
        assert fates == []
        dispatcher.complete(b, "r5", ANSWER)
        assert job.settle_for_caller()
        assert fates == [ANSWER.outcome]
