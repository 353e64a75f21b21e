"""Which connection gets which sign-in, and its answer: ``broker/dispatch/dispatcher.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from broker.dispatch.jobs import Answer
from pta.errors import NoAgentAvailable, Overloaded
from tests.broker.dispatch.helpers import (
    ANSWER,
    DOMAIN,
    NOW,
    OTHER_TENANT,
    TENANT,
    FakeClock,
    make_conn,
    make_job,
    sent,
)

if TYPE_CHECKING:
    from broker.dispatch.dispatcher import Dispatcher


class TestDispatcherCandidates:
    """Which connections a new job may be sealed to."""

    @pytest.mark.parametrize(
        ("tenant", "domain", "expected"),
        [
            (TENANT, DOMAIN, ["a1"]),
            (TENANT, "other.example", ["a2"]),
            (OTHER_TENANT, DOMAIN, ["b1"]),
            ("nobody", DOMAIN, []),
            (TENANT, "unserved.example", []),
        ],
        ids=["tenant-and-domain", "other-domain", "other-tenant", "unknown-tenant", "no-server"],
    )
    def test_filters_by_tenant_domain_and_draining(
        self, dispatcher: Dispatcher, tenant: str, domain: str, expected: list[str]
    ) -> None:
        """Only live, non-draining connections of the tenant serving the domain qualify."""
        draining = make_conn("a3")
        for conn in (
            make_conn("a1"),
            make_conn("a2", domains=("other.example",)),
            draining,
            make_conn("b1", tenant=OTHER_TENANT),
        ):
            dispatcher.attach(conn)
        dispatcher.drain(draining)
        got = [c.connection_id for c in dispatcher.candidates(tenant, domain)]
        assert got == expected

    def test_detached_connection_is_no_candidate(self, dispatcher: Dispatcher) -> None:
        """A detached connection is neither a candidate nor listed any more."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        assert dispatcher.connections() == [conn]
        dispatcher.detach(conn)
        assert dispatcher.candidates(TENANT, DOMAIN) == []
        assert dispatcher.connections() == []


class TestDispatcherSubmit:
    """Submitting a job: sent at once, queued, or refused."""

    async def test_job_goes_to_outbox(self, dispatcher: Dispatcher) -> None:
        """A job for a connection with room is in its outbox and in flight there."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        dispatcher.submit(job)
        assert sent(conn) == ["r1"]
        assert conn.in_flight == {"r1": job}
        assert job.connection_id == "a"
        assert dispatcher.queued(TENANT) == 0
        assert not job.done

    @pytest.mark.parametrize(
        ("loads", "expected"),
        [((0, 1, 2), "c0"), ((2, 0, 1), "c1"), ((2, 1, 0), "c2"), ((3, 3, 1), "c2")],
        ids=["first-least", "middle-least", "last-least", "others-full"],
    )
    async def test_least_in_flight_wins(
        self, dispatcher: Dispatcher, loads: tuple[int, ...], expected: str
    ) -> None:
        """Among connections with room, the one with fewest jobs in flight gets the job."""
        conns = [make_conn(f"c{i}", capacity=3) for i in range(len(loads))]
        for conn, load in zip(conns, loads, strict=True):
            dispatcher.attach(conn)
            for n in range(load):
                dispatcher.submit(make_job(f"{conn.connection_id}-pre{n}", conn))
            sent(conn)
        dispatcher.submit(make_job("new", *conns))
        assert {c.connection_id: sent(c) for c in conns} == {
            c.connection_id: ["new"] if c.connection_id == expected else [] for c in conns
        }

    async def test_capacity_respected(self, dispatcher: Dispatcher) -> None:
        """When every connection is full a job waits, and is sent when one completes."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        first, second = make_job("r1", conn), make_job("r2", conn)
        dispatcher.submit(first)
        dispatcher.submit(second)
        assert sent(conn) == ["r1"]
        assert dispatcher.queued(TENANT) == 1
        assert second.connection_id is None
        assert dispatcher.complete(conn, "r1", ANSWER)
        assert sent(conn) == ["r2"]
        assert conn.in_flight == {"r2": second}
        assert dispatcher.queued(TENANT) == 0

    async def test_overloaded_at_queue_limit(self, dispatcher: Dispatcher) -> None:
        """With queue_limit jobs waiting, the next one is refused and nothing is queued."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        dispatcher.submit(make_job("busy", conn))
        dispatcher.submit(make_job("q1", conn))
        dispatcher.submit(make_job("q2", conn))
        refused = make_job("q3", conn)
        with pytest.raises(Overloaded):
            dispatcher.submit(refused)
        assert dispatcher.queued(TENANT) == 2
        assert not refused.done

    async def test_queue_limit_is_per_tenant(self, dispatcher: Dispatcher) -> None:
        """One tenant's full queue does not refuse another tenant's job."""
        a = make_conn("a", capacity=1)
        b = make_conn("b", tenant=OTHER_TENANT, capacity=1)
        dispatcher.attach(a)
        dispatcher.attach(b)
        for request_id in ("busy", "q1", "q2"):
            dispatcher.submit(make_job(request_id, a))
        dispatcher.submit(make_job("theirs", b, tenant=OTHER_TENANT))
        assert sent(b) == ["theirs"]

    @pytest.mark.parametrize(
        "target",
        ["none", "unknown", "detached"],
        ids=["no-envelopes", "unknown-connection", "detached-connection"],
    )
    async def test_no_agent_available(self, dispatcher: Dispatcher, target: str) -> None:
        """A job sealed to no live connection is refused at once with NoAgentAvailable."""
        live, gone = make_conn("live"), make_conn("gone")
        dispatcher.attach(live)
        dispatcher.attach(gone)
        dispatcher.detach(gone)
        targets = {"none": (), "unknown": (make_conn("never-attached"),), "detached": (gone,)}
        with pytest.raises(NoAgentAvailable):
            dispatcher.submit(make_job("r1", *targets[target]))
        assert dispatcher.queued(TENANT) == 0
        assert sent(live) == []

    async def test_never_crosses_tenants_when_full(self, dispatcher: Dispatcher) -> None:
        """A job of tenant A waits for A's full connection though B's, named in it, is free."""
        a = make_conn("a", capacity=1)
        b = make_conn("b", tenant=OTHER_TENANT, capacity=5)
        dispatcher.attach(a)
        dispatcher.attach(b)
        dispatcher.submit(make_job("busy", a))
        job = make_job("r1", b, a)
        dispatcher.submit(job)
        assert dispatcher.queued(TENANT) == 1
        assert b.in_flight == {}
        dispatcher.complete(a, "busy", ANSWER)
        assert sent(a) == ["busy", "r1"]
        assert sent(b) == []
        assert job.connection_id == "a"

    async def test_never_crosses_tenants_when_busier(self, dispatcher: Dispatcher) -> None:
        """A job of tenant A goes to A's busier connection, not B's idle one named in it."""
        a = make_conn("a", capacity=3)
        b = make_conn("b", tenant=OTHER_TENANT, capacity=5)
        dispatcher.attach(a)
        dispatcher.attach(b)
        dispatcher.submit(make_job("pre0", a))
        dispatcher.submit(make_job("pre1", a))
        dispatcher.submit(make_job("r1", b, a))
        assert sent(a) == ["pre0", "pre1", "r1"]
        assert sent(b) == []
        assert b.in_flight == {}

    async def test_full_connection_skipped(self, dispatcher: Dispatcher) -> None:
        """A full connection gets nothing more, though it has fewer jobs than the other."""
        small, big = make_conn("small", capacity=1), make_conn("big", capacity=3)
        dispatcher.attach(small)
        dispatcher.attach(big)
        dispatcher.submit(make_job("s0", small))
        dispatcher.submit(make_job("b0", big))
        dispatcher.submit(make_job("b1", big))
        dispatcher.submit(make_job("r1", small, big))
        assert small.in_flight.keys() == {"s0"}
        assert big.in_flight.keys() == {"b0", "b1", "r1"}

    async def test_waits_for_own_connection(self, dispatcher: Dispatcher) -> None:
        """A job waits for a connection it was sealed to, even when another one has room."""
        sealed_to, other = make_conn("sealed-to"), make_conn("other")
        dispatcher.attach(sealed_to)
        dispatcher.attach(other)
        dispatcher.submit(make_job("busy", sealed_to))
        job = make_job("r1", sealed_to)
        dispatcher.submit(job)
        assert sealed_to.in_flight.keys() == {"busy"}
        assert other.in_flight == {}
        assert dispatcher.queued(TENANT) == 1

    async def test_envelope_only_for_other_tenant_is_refused(self, dispatcher: Dispatcher) -> None:
        """A job whose only envelope is for another tenant's connection is refused at once."""
        b = make_conn("b", tenant=OTHER_TENANT)
        dispatcher.attach(b)
        with pytest.raises(NoAgentAvailable):
            dispatcher.submit(make_job("r1", b, tenant=TENANT))
        assert dispatcher.queued(TENANT) == 0

    @pytest.mark.parametrize("offset", [0.0, -1.0], ids=["deadline-now", "deadline-past"])
    async def test_expired_job_never_sent(self, dispatcher: Dispatcher, offset: float) -> None:
        """A job whose deadline is at or before the clock never reaches an outbox."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn, deadline=NOW + offset)
        dispatcher.submit(job)
        assert sent(conn) == []
        assert conn.in_flight == {}
        assert dispatcher.queued(TENANT) == 0

    async def test_job_expiring_in_queue_never_sent(
        self, dispatcher: Dispatcher, clock: FakeClock
    ) -> None:
        """A queued job whose deadline passes while it waits is dropped, not sent late."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        dispatcher.submit(make_job("busy", conn))
        dispatcher.submit(make_job("late", conn, deadline=NOW + 5))
        dispatcher.submit(make_job("fresh", conn, deadline=NOW + 60))
        sent(conn)
        clock.now = NOW + 5
        dispatcher.complete(conn, "busy", ANSWER)
        assert sent(conn) == ["fresh"]
        assert dispatcher.queued(TENANT) == 0

    async def test_settled_job_in_queue_never_sent(self, dispatcher: Dispatcher) -> None:
        """A queued job whose future is already settled is dropped instead of sent."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        dispatcher.submit(make_job("busy", conn))
        cancelled = make_job("cancelled", conn)
        dispatcher.submit(cancelled)
        sent(conn)
        cancelled.future.cancel()
        dispatcher.complete(conn, "busy", ANSWER)
        assert sent(conn) == []
        assert conn.in_flight == {}


class TestDispatcherComplete:
    """Answers: accepted only from the connection that was sent the job."""

    async def test_resolves_future_and_frees_room(self, dispatcher: Dispatcher) -> None:
        """The answer becomes the future's result and the connection has room again."""
        conn = make_conn("a", capacity=1)
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        dispatcher.submit(job)
        assert dispatcher.complete(conn, "r1", ANSWER) is True
        assert job.future.result() == ANSWER
        assert conn.free == 1

    @pytest.mark.parametrize(
        ("answering", "request_id"),
        [("a", "unknown"), ("a2", "r1"), ("b", "r1")],
        ids=["unknown-request-id", "other-connection-same-tenant", "other-tenant-connection"],
    )
    async def test_refuses_answer_not_owed(
        self, dispatcher: Dispatcher, answering: str, request_id: str
    ) -> None:
        """An answer for a job the connection was not sent returns False and changes nothing."""
        conns = {
            "a": make_conn("a"),
            "a2": make_conn("a2"),
            "b": make_conn("b", tenant=OTHER_TENANT),
        }
        for conn in conns.values():
            dispatcher.attach(conn)
        job = make_job("r1", conns["a"])
        dispatcher.submit(job)
        forged = Answer(outcome=1, message="ok", agent_id=conns[answering].agent_id)
        assert dispatcher.complete(conns[answering], request_id, forged) is False
        assert not job.done
        assert conns["a"].in_flight == {"r1": job}

    async def test_second_answer_refused(self, dispatcher: Dispatcher) -> None:
        """A job is answered once: a repeated answer returns False and keeps the first."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        dispatcher.submit(job)
        assert dispatcher.complete(conn, "r1", ANSWER)
        other = Answer(outcome=2, message="no", agent_id="agent-a")
        assert dispatcher.complete(conn, "r1", other) is False
        assert job.future.result() == ANSWER

    async def test_answer_after_caller_gave_up(self, dispatcher: Dispatcher) -> None:
        """An owed answer to a job whose future was cancelled is accepted without error."""
        conn = make_conn("a")
        dispatcher.attach(conn)
        job = make_job("r1", conn)
        dispatcher.submit(job)
        job.future.cancel()
        assert dispatcher.complete(conn, "r1", ANSWER) is True
        assert job.future.cancelled()
        assert conn.in_flight == {}
