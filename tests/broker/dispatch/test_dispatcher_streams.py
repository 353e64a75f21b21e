"""What a stream ending, draining, cut or a caller leaving does to the jobs it held."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from broker.dispatch.dispatcher import NotSent
from broker.dispatch.jobs import MAY_HAVE_TRIED, AgentLost
from pta.errors import NoAgentAvailable
from tests.broker.dispatch.helpers import (
    ANSWER,
    DOMAIN,
    OTHER_TENANT,
    TENANT,
    failure,
    make_conn,
    make_job,
    sent,
)

if TYPE_CHECKING:
    from broker.dispatch.dispatcher import Dispatcher


class TestDispatcherDetach:
    """A connection's stream ended: settle what it held."""

    async def test_fails_in_flight_jobs(self, dispatcher: Dispatcher) -> None:
        """Jobs in flight at the connection, sealed to it alone, fail NotSent: not re-sent here.

        NotSent is a NoAgentAvailable that tells the check (broker/dispatch/checks.py) no agent
        had them: it seals them again, to the connections there are now.
        """
        a, b = make_conn("a", capacity=2), make_conn("b", capacity=2)
        dispatcher.attach(a)
        dispatcher.attach(b)
        jobs = [make_job("r1", a), make_job("r2", a)]
        for job in jobs:
            dispatcher.submit(job)
        dispatcher.detach(a)
        assert [type(failure(job)) for job in jobs] == [NotSent, NotSent]
        assert all(isinstance(failure(job), NoAgentAvailable) for job in jobs)
        assert a.in_flight == {}
        assert sent(b) == []

    async def test_unacknowledged_job_goes_to_another_agent(self, dispatcher: Dispatcher) -> None:
        """A job the lost agent never acknowledged is sent at once to one that can open it."""
        a, b = make_conn("a"), make_conn("b")
        dispatcher.attach(a)
        dispatcher.attach(b)
        job = make_job("r1", a, b)
        dispatcher.submit(job)
        assert job.connection_id == "a"
        sent(a)
        dispatcher.detach(a)
        assert not job.done
        assert sent(b) == ["r1"]
        assert job.connection_id == "b"
        assert "a" not in job.envelopes
        assert dispatcher.complete(b, "r1", ANSWER)
        assert job.future.result() == ANSWER

    async def test_acknowledged_job_is_not_sent_again_by_the_dispatcher(
        self, dispatcher: Dispatcher
    ) -> None:
        """A job the lost agent acknowledged may have been tried: AgentLost, settled as such.

        The dispatcher sends it nowhere itself: whether a second try has room is the lockout's
        call, made by the job's caller.
        """
        a, b = make_conn("a"), make_conn("b")
        dispatcher.attach(a)
        dispatcher.attach(b)
        settled: list[int | None] = []
        job = make_job("r1", a, b)
        job.settled = settled.append
        dispatcher.submit(job)
        assert dispatcher.acknowledge(a, ["r1", "not-mine"]) == 1
        dispatcher.detach(a)
        error = failure(job)
        assert isinstance(error, AgentLost)
        assert not isinstance(error, NoAgentAvailable)
        assert settled == [], "the waiting caller settles it, on its own task"
        assert job.settle_for_caller()
        assert settled == [MAY_HAVE_TRIED]
        assert sent(b) == []
        assert list(job.envelopes) == ["b"], "the other connection's envelope is kept"

    async def test_written_job_may_have_been_tried(self, dispatcher: Dispatcher) -> None:
        """Written to the stream, never acknowledged (a broker that counts lost requests)."""
        a, b = make_conn("a", capacity=2), make_conn("b")
        dispatcher.attach(a)
        written, queued = make_job("r1", a, b), make_job("r2", a, b)
        dispatcher.submit(written)
        dispatcher.submit(queued)
        dispatcher.attach(b)
        assert [job.request_id for job in a.in_flight.values()] == ["r1", "r2"]
        written.written = True  # The stream handed it to grpc; r2 still waits in the outbox.
        dispatcher.detach(a)
        assert isinstance(failure(written), AgentLost)
        assert not queued.done
        assert sent(b) == ["r2"]

    async def test_resent_job_goes_to_another_agent(self, dispatcher: Dispatcher) -> None:
        """The caller sends it on: a fresh job, the lost connection's envelope gone."""
        a, b = make_conn("a"), make_conn("b")
        dispatcher.attach(a)
        dispatcher.attach(b)
        job = make_job("r1", a, b)
        dispatcher.submit(job)
        dispatcher.acknowledge(a, ["r1"])
        sent(a)
        dispatcher.detach(a)
        settled: list[int | None] = []
        again = job.resend(asyncio.get_running_loop().create_future(), settled.append)
        dispatcher.submit(again)
        assert sent(b) == ["r1"]
        assert not again.acked
        assert dispatcher.complete(b, "r1", ANSWER)
        assert again.future.result() == ANSWER
        assert again.settle_for_caller()
        assert settled == [ANSWER.outcome]

    async def test_queued_jobs_kept_only_when_routable(self, dispatcher: Dispatcher) -> None:
        """Queued jobs only the lost connection could take fail; the others go elsewhere."""
        a, b = make_conn("a"), make_conn("b")
        dispatcher.attach(a)
        dispatcher.attach(b)
        dispatcher.submit(make_job("on-a", a))
        dispatcher.submit(make_job("on-b", b))
        routable = make_job("a-or-b", a, b)
        stranded = make_job("a-only", a)
        dispatcher.submit(routable)
        dispatcher.submit(stranded)
        sent(a)
        sent(b)
        dispatcher.detach(a)
        assert isinstance(failure(stranded), NoAgentAvailable)
        assert not routable.done
        assert dispatcher.queued(TENANT) == 1
        assert dispatcher.complete(b, "on-b", ANSWER)
        assert sent(b) == ["a-or-b"]
        assert routable.connection_id == "b"

    async def test_other_tenant_untouched(self, dispatcher: Dispatcher) -> None:
        """Losing a connection of one tenant settles nothing of another tenant."""
        a = make_conn("a")
        b = make_conn("b", tenant=OTHER_TENANT)
        dispatcher.attach(a)
        dispatcher.attach(b)
        theirs = make_job("r1", b, tenant=OTHER_TENANT)
        dispatcher.submit(theirs)
        dispatcher.detach(a)
        assert not theirs.done
        assert b.in_flight == {"r1": theirs}


class TestDispatcherDrain:
    """A draining connection gets no new work and ends once it holds none."""

    async def test_no_new_work(self, dispatcher: Dispatcher) -> None:
        """A job sealed to a draining and a busier live connection goes to the live one."""
        draining, live = make_conn("d", capacity=3), make_conn("l", capacity=3)
        dispatcher.attach(draining)
        dispatcher.attach(live)
        dispatcher.submit(make_job("pre", live))
        dispatcher.drain(draining)
        dispatcher.submit(make_job("r1", draining, live))
        assert sent(draining) == []
        assert sent(live) == ["pre", "r1"]
        assert dispatcher.candidates(TENANT, DOMAIN) == [live]

    async def test_held_work_still_answered(self, dispatcher: Dispatcher) -> None:
        """Jobs in flight at a draining connection are still accepted as answered."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        dispatcher.submit(job)
        dispatcher.drain(conn)
        assert not conn.ended.is_set()
        assert dispatcher.complete(conn, "r1", ANSWER)
        assert job.future.result() == ANSWER
        assert conn.ended.is_set()

    async def test_job_sealed_only_to_it_still_sent(self, dispatcher: Dispatcher) -> None:
        """A queued job only a draining connection can open still goes to it, then it ends."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        dispatcher.submit(make_job("busy", conn))
        queued = make_job("queued", conn)
        dispatcher.submit(queued)
        dispatcher.drain(conn)
        assert not queued.done
        dispatcher.complete(conn, "busy", ANSWER)
        assert sent(conn) == ["busy", "queued"]
        assert not conn.ended.is_set()
        dispatcher.complete(conn, "queued", ANSWER)
        assert conn.ended.is_set()

    def test_idle_connection_ends_at_once(self, dispatcher: Dispatcher) -> None:
        """Draining a connection that holds nothing ends its stream immediately."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        dispatcher.drain(conn)
        assert conn.ended.is_set()
        assert conn.end_error is None

    async def test_an_ended_connection_takes_nothing_more(self, dispatcher: Dispatcher) -> None:
        """Drained and ended, not yet detached: a job sealed to it before is not sent there.

        A sign-in sealed to a connection before its agent said it was draining, and submitted
        after the drained stream was told to end, went to that stream, was lost with it and
        was sent on to the agent's new stream, which refused it as a replay (CI: a rotation
        under load). It is sealed again instead, as for a connection that left.
        """
        old, new = make_conn("old"), make_conn("new")
        dispatcher.attach(old)
        dispatcher.attach(new)
        early = make_job("early", old)
        dispatcher.drain(old)
        assert old.ended.is_set()
        assert not dispatcher.reachable(early)
        with pytest.raises(NoAgentAvailable):
            dispatcher.submit(early)
        assert sent(old) == []
        both = make_job("both", old, new)
        dispatcher.submit(both)
        assert sent(new) == ["both"]
        assert sent(old) == []

    async def test_a_cut_connection_takes_nothing_more(self, dispatcher: Dispatcher) -> None:
        """Cut (revoked), not yet detached: neither sealed to nor sent anything new."""
        conn = make_conn("a", capacity=2)
        dispatcher.attach(conn)
        dispatcher.cut(conn, NoAgentAvailable("revoked"))
        assert dispatcher.sealing_targets(TENANT, DOMAIN) == []
        with pytest.raises(NoAgentAvailable):
            dispatcher.submit(make_job("late", conn))
        assert sent(conn) == []


class TestDispatcherCut:
    """Cutting a connection ends its stream with a reason."""

    def test_sets_error_and_ends(self, dispatcher: Dispatcher) -> None:
        """The stream is told to end, with the error it is to answer."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        error = NoAgentAvailable("revoked")
        dispatcher.cut(conn, error)
        assert conn.ended.is_set()
        assert conn.end_error is error


class TestDispatcherWithdraw:
    """A caller stopped waiting: its job is forgotten wherever it is."""

    async def test_queued_job_removed(self, dispatcher: Dispatcher) -> None:
        """A withdrawn queued job leaves the queue, is cancelled, and is never sent."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        dispatcher.submit(make_job("busy", conn))
        job = make_job("r1", conn)
        dispatcher.submit(job)
        dispatcher.withdraw(job)
        assert dispatcher.queued(TENANT) == 0
        assert job.future.cancelled()
        dispatcher.complete(conn, "busy", ANSWER)
        assert sent(conn) == ["busy"]

    async def test_in_flight_job_keeps_its_slot_until_answered(
        self, dispatcher: Dispatcher
    ) -> None:
        """A withdrawn in-flight job holds its slot until the agent answers it (bounded work)."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        job, waiting = make_job("r1", conn), make_job("r2", conn)
        dispatcher.submit(job)
        dispatcher.submit(waiting)
        dispatcher.withdraw(job)
        assert job.future.cancelled()
        assert sent(conn) == ["r1"]
        assert dispatcher.complete(conn, "r1", ANSWER) is True
        assert sent(conn) == ["r2"]
        assert conn.in_flight == {"r2": waiting}

    async def test_answered_job_keeps_answer(self, dispatcher: Dispatcher) -> None:
        """Withdrawing a job that already has its answer does not cancel it."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        dispatcher.submit(job)
        dispatcher.complete(conn, "r1", ANSWER)
        dispatcher.withdraw(job)
        assert job.future.result() == ANSWER

    async def test_ends_drained_connection(self, dispatcher: Dispatcher) -> None:
        """A draining connection ends once its last (withdrawn) job is answered."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        dispatcher.submit(job)
        dispatcher.drain(conn)
        dispatcher.withdraw(job)
        assert not conn.ended.is_set()
        dispatcher.complete(conn, "r1", ANSWER)
        assert conn.ended.is_set()
