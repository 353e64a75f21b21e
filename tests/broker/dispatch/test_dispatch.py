"""Which connection gets which sign-in: ``broker/dispatch/dispatcher.py``, fake clock."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from broker.dispatch.dispatcher import Dispatcher
from broker.dispatch.jobs import MAY_HAVE_TRIED, AgentLost, Answer, Connection, Job
from pta import sealing
from pta.errors import DeadlineExceeded, NoAgentAvailable, Overloaded

TENANT = "acme"
OTHER_TENANT = "globex"
DOMAIN = "example.com"
NOW = 1000.0
LATER = NOW + 30.0
ENVELOPE_KEY = sealing.generate_key().public_key()
ANSWER = Answer(outcome=1, message="ok", agent_id="agent-a")


class FakeClock:
    """Event-loop time that moves only when a test says so."""

    def __init__(self, now: float = NOW) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now


def make_conn(
    connection_id: str,
    *,
    tenant: str = TENANT,
    domains: tuple[str, ...] = (DOMAIN,),
    capacity: int = 1,
) -> Connection:
    """Build a connection of ``tenant`` serving ``domains``."""
    return Connection(
        connection_id=connection_id,
        agent_id=f"agent-{connection_id}",
        tenant=tenant,
        domains=frozenset(domains),
        capacity=capacity,
        envelope_key=ENVELOPE_KEY,
    )


def make_job(
    request_id: str,
    *targets: Connection,
    tenant: str = TENANT,
    domain: str = DOMAIN,
    deadline: float = LATER,
) -> Job:
    """Build a job with one (fake) envelope per target connection."""
    return Job(
        request_id=request_id,
        tenant=tenant,
        domain=domain,
        deadline=deadline,
        deadline_unix_ms=int(deadline * 1000),
        envelopes={c.connection_id: f"sealed:{c.connection_id}".encode() for c in targets},
        future=asyncio.get_running_loop().create_future(),
    )


def sent(conn: Connection) -> list[str]:
    """Empty a connection's outbox and return the request ids it held, in order."""
    ids = []
    while not conn.outbox.empty():
        ids.append(conn.outbox.get_nowait().request_id)
    return ids


def failure(job: Job) -> BaseException | None:
    """Return the exception a job's future was failed with (retrieving it)."""
    assert job.future.done()
    return job.future.exception()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at :data:`NOW`."""
    return FakeClock()


@pytest.fixture
def dispatcher(clock: FakeClock) -> Dispatcher:
    """A dispatcher with a small queue limit on the fake clock."""
    return Dispatcher(queue_limit=2, clock=clock)


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


class TestDispatcherDetach:
    """A connection's stream ended: settle what it held."""

    async def test_fails_in_flight_jobs(self, dispatcher: Dispatcher) -> None:
        """Jobs in flight at the connection fail with NoAgentAvailable, not re-sent."""
        a, b = make_conn("a", capacity=2), make_conn("b", capacity=2)
        dispatcher.attach(a)
        dispatcher.attach(b)
        jobs = [make_job("r1", a), make_job("r2", a)]
        for job in jobs:
            dispatcher.submit(job)
        dispatcher.detach(a)
        assert [type(failure(job)) for job in jobs] == [NoAgentAvailable, NoAgentAvailable]
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
            dispatcher.check(TENANT, DOMAIN, "r6", b"credentials", 5.0, settled=settled)
        )
        job = await conn.outbox.get()

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
