"""Which connected agent validates which sign-in: the registry, the queues, the answers.

Pure logic on the event loop, with no gRPC in it, so it is tested without a network. A sign-in
becomes a :class:`Job` holding a sealed envelope for each agent connection it may go to; a job
waits in its tenant's bounded queue until one of those connections has room, then goes to the
least loaded of them. Agents never see a job of another tenant: a job is only ever sealed to,
queued for and sent to connections of its own tenant.

Which connections a job is sealed to (:meth:`Dispatcher.sealing_targets`): the least loaded
one alone when it has room and nothing of the tenant waits (the job goes there at once), else
the :data:`SEALED_CANDIDATES` least loaded (the job waits for whichever frees first). So a
sign-in costs the broker one HPKE seal, two at most, however many agents the tenant has
(sealing to every connection cost one seal per agent: 0.1-0.2 ms each). When the connections
it was sealed to are all gone before any agent had it, or its agent is lost after and the
lockout lets another try, :func:`broker.dispatch.checks.check` seals it again, to the
connections there are then: the credentials stay in the caller's frame, never in a queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from typing import TYPE_CHECKING

import structlog

from broker.dispatch.jobs import LOST_AFTER_ACK, MAY_HAVE_TRIED, AgentLost, Answer, Connection, Job
from pta.errors import DeadlineExceeded, NoAgentAvailable, Overloaded, PtaError

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger()

DEFAULT_QUEUE_LIMIT = 1024
#: Connections a job that must wait is sealed to (it goes to whichever has room first).
SEALED_CANDIDATES = 2


class NotSent(NoAgentAvailable):
    """Every connection the job was sealed to left before any agent had it: seal it again.

    No agent saw it, so sending it again cannot count a password twice;
    :func:`broker.dispatch.checks.check` does so while connections are left and the deadline
    allows.
    """


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
                job.conclude(MAY_HAVE_TRIED, error=AgentLost(LOST_AFTER_ACK))
            elif any(cid in tenant_conns for cid in job.envelopes) and not job.done:
                queue.appendleft(job)
            else:
                _not_sent(job, "the agent handling this sign-in disconnected")
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

    def sealing_targets(self, tenant: str, domain: str) -> list[Connection]:
        """The connections to seal a new job to: one with room now, else the two least loaded.

        The least loaded with room, when the tenant's queue is empty (the job goes there at
        once, as :meth:`_pump` would send it); otherwise the :data:`SEALED_CANDIDATES` least
        loaded. Ties go to the connection attached first, as in :meth:`_pump`. Empty when no
        connection serves the domain.
        """
        conns = self.candidates(tenant, domain)
        if len(conns) <= 1:
            return conns
        roomy = [c for c in conns if c.free > 0]
        if roomy and not self._queues.get(tenant):
            return [min(roomy, key=lambda c: len(c.in_flight))]
        return sorted(conns, key=lambda c: len(c.in_flight))[:SEALED_CANDIDATES]

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
        if not self.reachable(job):
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
        if job.written_at:
            elapsed = round((time.perf_counter() - job.written_at) * 1000, 3)
            answer = dataclasses.replace(answer, agent_ms=elapsed)
        job.conclude(answer.outcome, answer)
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

    def reachable(self, job: Job) -> bool:
        """Whether a connection the job was sealed to is still attached and open."""
        live = self._by_tenant.get(job.tenant, {})
        return any((conn := live.get(cid)) is not None and conn.open for cid in job.envelopes)

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
                # An agent never sees it; a caller still waiting hears so on its own task.
                job.conclude(None, error=DeadlineExceeded("no agent answered before the deadline"))
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
                _not_sent(job, f"no agent is connected for {job.domain}")
        self._queues[tenant] = keep


def _fail(job: Job, error: PtaError) -> None:
    """Answer a job with ``error``: no agent will check it (or can say whether it did)."""
    job.conclude(None, error=error)


def _not_sent(job: Job, reason: str) -> None:
    """Fail a job no agent had, whose connections are all gone: its caller may seal it again.

    A caller still waiting takes the job's accounting back (it sends the job on, or reports
    that no agent checked it); one that stopped waiting hears it here, as any failed job.
    """
    if not job.done:
        job.settled = None
    job.conclude(None, error=NotSent(reason))
