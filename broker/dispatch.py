"""Which connected agent validates which sign-in: the registry, the queues, the answers.

Pure logic on the event loop, with no gRPC in it, so it is tested without a network. A sign-in
becomes a :class:`Job` holding one sealed envelope per agent connection it may go to; a job
waits in its tenant's bounded queue until one of those connections has room, then goes to the
least loaded of them. Agents never see a job of another tenant: a job is only ever sealed to,
queued for and sent to connections of its own tenant.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from pta.errors import NoAgentAvailable, Overloaded, PtaError, Unavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

log = structlog.get_logger()

DEFAULT_QUEUE_LIMIT = 1024
LOST_AFTER_ACK = (
    "the agent checking this sign-in was lost after it started, and another try now could "
    "lock the account in the organisation's directory: sign in again later"
)
#: What a job is settled with when its agent was lost after acknowledging it: the password
#: may have been tried (not an outcome of the contract; the lockout counts it as a possible
#: wrong password at the directory).
MAY_HAVE_TRIED = -1


class AgentLost(Unavailable):
    """The agent was lost after the job was written to it: the caller may send it on.

    The job keeps its envelopes for the tenant's other connections; whether another agent
    may try it again is the lockout's decision (a second try may count twice at the
    directory), not the dispatcher's.
    """


@dataclass(frozen=True, slots=True)
class Answer:
    """An agent's verdict on one job (``outcome`` is a ``pta.v1.Outcome`` value)."""

    outcome: int
    message: str
    agent_id: str


@dataclass(eq=False, slots=True, kw_only=True)
class Job:
    """One sign-in waiting for, or being worked on by, an agent."""

    request_id: str
    tenant: str
    domain: str
    #: Event-loop time after which nobody wants the answer.
    deadline: float
    deadline_unix_ms: int
    #: Connection id -> envelope sealed to that connection's key.
    envelopes: dict[str, bytes]
    future: asyncio.Future[Answer]
    connection_id: str | None = None
    #: Handed to the stream for its agent (``written``), or acknowledged by an agent that says
    #: so (``acked``): either way it may have been tried, and if the agent is lost the job
    #: fails with :class:`AgentLost`; only its caller may send it on (see :meth:`resend`).
    written: bool = False
    acked: bool = False
    #: Told, once, what became of the job in the end: the agent's outcome, or None when no
    #: agent will ever answer it. Later than the future when the caller stopped waiting first:
    #: an agent that has the job may still bind, and the lockout must hear what it found.
    settled: Callable[[int | None], None] | None = None

    def settle(self, outcome: int | None) -> None:
        """Report the job's final fate (once)."""
        callback, self.settled = self.settled, None
        if callback is not None:
            callback(outcome)

    @property
    def done(self) -> bool:
        """Whether the job has its one answer (or failure) already."""
        return self.future.done()

    def resend(
        self, future: asyncio.Future[Answer], settled: Callable[[int | None], None] | None
    ) -> Job:
        """A copy to dispatch again after :class:`AgentLost`: a fresh answer and accounting.

        Its envelopes are those still held for other connections (the lost one's is gone).
        """
        return Job(
            request_id=self.request_id,
            tenant=self.tenant,
            domain=self.domain,
            deadline=self.deadline,
            deadline_unix_ms=self.deadline_unix_ms,
            envelopes=dict(self.envelopes),
            future=future,
            settled=settled,
        )


@dataclass(eq=False, slots=True, kw_only=True)
class Connection:
    """One live Connect stream of an agent."""

    connection_id: str
    agent_id: str
    tenant: str
    domains: frozenset[str]
    capacity: int
    envelope_key: X25519PublicKey
    version: str = ""
    serial: str = ""
    outbox: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    in_flight: dict[str, Job] = field(default_factory=dict)
    draining: bool = False
    #: Set when the stream should end: drained and idle, or cut (then ``end_error`` says why).
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_error: PtaError | None = None
    #: Wall-clock times, for operators.
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    def serves(self, domain: str) -> bool:
        """Whether new jobs for ``domain`` may be sealed to this connection."""
        return not self.draining and domain in self.domains

    @property
    def free(self) -> int:
        """How many more jobs the agent said it takes at once."""
        return self.capacity - len(self.in_flight)


class Dispatcher:
    """Registry of connections and per-tenant queues of jobs."""

    def __init__(
        self, *, queue_limit: int = DEFAULT_QUEUE_LIMIT, clock: Callable[[], float] | None = None
    ) -> None:
        """Create an empty dispatcher.

        Args:
            queue_limit: Jobs a tenant may have waiting; more are refused at once.
            clock: Event-loop time, for deadlines (the running loop's by default).
        """
        self._queue_limit = queue_limit
        self._clock = clock
        self._connections: dict[str, Connection] = {}
        self._by_tenant: dict[str, dict[str, Connection]] = {}
        self._queues: dict[str, deque[Job]] = {}

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # Connections ----------------------------------------------------------------------------

    def attach(self, conn: Connection) -> None:
        """Register a connection: it takes work from now on."""
        self._connections[conn.connection_id] = conn
        self._by_tenant.setdefault(conn.tenant, {})[conn.connection_id] = conn

    def detach(self, conn: Connection) -> None:
        """Forget a connection whose stream ended, and settle every job it held.

        Jobs never written to its stream go to another agent of the tenant that can open them,
        at once and ahead of the queue. Jobs written to it (or acknowledged by an agent that
        still acknowledges) may have been tried in the directory already: each is settled
        with :data:`MAY_HAVE_TRIED` (the lockout counts it) and fails with :class:`AgentLost`,
        so that its caller decides, with the lockout, whether a second try has room (it could
        count a wrong password twice). Queued jobs that can no longer go anywhere get
        UNAVAILABLE at once rather than at the deadline.
        """
        self._connections.pop(conn.connection_id, None)
        tenant_conns = self._by_tenant.get(conn.tenant, {})
        tenant_conns.pop(conn.connection_id, None)
        queue = self._queues.setdefault(conn.tenant, deque())
        for job in reversed(list(conn.in_flight.values())):
            job.envelopes.pop(conn.connection_id, None)
            job.connection_id = None
            if job.written or job.acked:
                log.info(
                    "signin.agent_lost_while_checking",
                    request_id=job.request_id,
                    tenant=job.tenant,
                    agent_id=conn.agent_id,
                )
                job.settle(MAY_HAVE_TRIED)
                _fail(job, AgentLost(LOST_AFTER_ACK))
            elif any(cid in tenant_conns for cid in job.envelopes) and not job.done:
                queue.appendleft(job)
            else:
                _fail(job, NoAgentAvailable("the agent handling this sign-in disconnected"))
        conn.in_flight.clear()
        self._settle_unroutable(conn.tenant)
        self._pump(conn.tenant)

    def drain(self, conn: Connection) -> None:
        """Seal nothing new to a connection; it still gets what was sealed to it, then ends.

        Jobs already sealed to it (in flight, or queued with its envelope) can be opened by no
        one else's key, so they still go to it; once it holds none, its stream is ended.
        """
        conn.draining = True
        self._pump(conn.tenant)
        self._end_if_drained(conn)

    def cut(self, conn: Connection, error: PtaError) -> None:
        """End a connection's stream at once, answering with ``error`` (e.g. revocation)."""
        conn.end_error = error
        conn.ended.set()

    def _end_if_drained(self, conn: Connection) -> None:
        if conn.draining and not conn.in_flight and not self._queued_for(conn):
            conn.ended.set()

    def _queued_for(self, conn: Connection) -> bool:
        queue = self._queues.get(conn.tenant, ())
        return any(conn.connection_id in job.envelopes for job in queue)

    def candidates(self, tenant: str, domain: str) -> list[Connection]:
        """Return the connections a new job for ``domain`` may be sealed to."""
        return [c for c in self._by_tenant.get(tenant, {}).values() if c.serves(domain)]

    def connections(self) -> list[Connection]:
        """Return every live connection."""
        return list(self._connections.values())

    # Jobs -----------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job and send it at once if an agent has room.

        Raises:
            NoAgentAvailable: When the job is sealed to no live connection.
            Overloaded: When the tenant's queue is full.
        """
        tenant_conns = self._by_tenant.get(job.tenant, {})
        if not any(cid in tenant_conns for cid in job.envelopes):
            raise NoAgentAvailable(f"no agent is connected for {job.domain}")
        queue = self._queues.setdefault(job.tenant, deque())
        if len(queue) >= self._queue_limit:
            raise Overloaded("too many sign-ins waiting for this organisation's agents")
        queue.append(job)
        self._pump(job.tenant)

    def acknowledge(self, conn: Connection, request_ids: list[str]) -> int:
        """Mark jobs the connection is about to check; returns how many it really holds."""
        marked = 0
        for request_id in request_ids:
            job = conn.in_flight.get(request_id)
            if job is not None:
                job.acked = True
                marked += 1
        return marked

    def complete(self, conn: Connection, request_id: str, answer: Answer) -> bool:
        """Record a connection's answer to a job it was sent.

        Returns:
            False when this connection was not working on that request id (a late answer
            after the deadline, or an agent answering what it was never sent).
        """
        job = conn.in_flight.pop(request_id, None)
        if job is None:
            return False
        if not job.future.done():
            job.future.set_result(answer)
        job.settle(answer.outcome)
        self._pump(conn.tenant)
        self._end_if_drained(conn)
        return True

    def withdraw(self, job: Job) -> None:
        """Forget a job whose caller stopped waiting (deadline or cancellation).

        A job an agent is working on keeps its slot until the agent answers (or is lost): the
        agent is still busy with it, and freeing the slot early would let a slow directory
        pile up an unbounded backlog at the agent.
        """
        if job.connection_id is None:
            queue = self._queues.get(job.tenant)
            if queue is not None and job in queue:
                queue.remove(job)
                for cid in job.envelopes:
                    if (conn := self._connections.get(cid)) is not None:
                        self._end_if_drained(conn)
            job.settle(None)  # Never sent: no agent will check it.
        if not job.future.done():
            job.future.cancel()

    def release(self, conn: Connection, job: Job) -> None:
        """Take back a job handed to ``conn`` that will not be sent after all.

        Its caller gave up before the stream wrote it: the agent never saw it, so its slot is
        free again and no agent checked it.
        """
        if conn.in_flight.get(job.request_id) is job:
            del conn.in_flight[job.request_id]
        job.settle(None)
        self._pump(conn.tenant)
        self._end_if_drained(conn)

    def queued(self, tenant: str) -> int:
        """Return how many jobs of a tenant wait for an agent."""
        return len(self._queues.get(tenant, ()))

    def _pump(self, tenant: str) -> None:
        """Hand queued jobs to the least loaded connection that has room and their envelope."""
        queue = self._queues.get(tenant)
        conns = self._by_tenant.get(tenant)
        if not queue or not conns or not any(c.free > 0 for c in conns.values()):
            return
        now = self._now()
        waiting: deque[Job] = deque()
        while queue:
            job = queue.popleft()
            if job.done or job.deadline <= now:
                # Its caller answers (DEADLINE_EXCEEDED, most likely); an agent never sees it.
                job.settle(None)
                continue
            # Least loaded first; a draining connection only when every other connection that
            # can open the job is full.
            best: Connection | None = None
            for cid in job.envelopes:
                conn = conns.get(cid)
                if (
                    conn is not None
                    and conn.free > 0
                    and (
                        best is None
                        or (conn.draining, len(conn.in_flight))
                        < (best.draining, len(best.in_flight))
                    )
                ):
                    best = conn
            if best is None:
                waiting.append(job)
                continue
            job.connection_id = best.connection_id
            best.in_flight[job.request_id] = job
            best.outbox.put_nowait(job)
        queue.extend(waiting)

    def _settle_unroutable(self, tenant: str) -> None:
        """Fail queued jobs none of whose connections can take them any more."""
        queue = self._queues.get(tenant)
        if not queue:
            return
        live = self._by_tenant.get(tenant, {})
        keep: deque[Job] = deque()
        for job in queue:
            if any(cid in live for cid in job.envelopes):
                keep.append(job)
            else:
                _fail(job, NoAgentAvailable(f"no agent is connected for {job.domain}"))
        self._queues[tenant] = keep


def _fail(job: Job, error: PtaError) -> None:
    """Answer a job with ``error``: no agent will check it (or can say whether it did)."""
    if not job.future.done():
        job.future.set_exception(error)
    job.settle(None)
