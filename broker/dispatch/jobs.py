"""What the dispatcher moves: a sign-in's job, an agent's connection, an agent's answer.

Plain values and their own small rules (a job is settled once; a connection says whether it
takes new work), with no gRPC and no queueing: :mod:`broker.dispatch.dispatcher` does the moving.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pta.errors import AgentMayHaveTried, PtaError, Unavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

LOST_AFTER_ACK = (
    "the agent checking this sign-in was lost after it started, and another try now could "
    "lock the account in the organisation's directory: sign in again later"
)
#: What a job is settled with when its agent was lost after acknowledging it: the password
#: may have been tried (not an outcome of the contract; the lockout counts it as a possible
#: wrong password at the directory).
MAY_HAVE_TRIED = -1


class AgentLost(AgentMayHaveTried):
    """The agent was lost after the job was written to it: the caller may send it on.

    The job keeps its envelopes for the tenant's other connections; whether another agent
    may try it again is the lockout's decision (a second try may count twice at the
    directory), not the dispatcher's, and never a client's retry policy's.
    """


@dataclass(frozen=True, slots=True)
class Answer:
    """An agent's verdict on one job (``outcome`` is a ``pta.v1.Outcome`` value)."""

    outcome: int
    message: str
    agent_id: str
    #: Milliseconds from the job's hand-off to the agent's stream to its answer, and of those
    #: at the directory as the agent said (0: unknown); for the audit.
    agent_ms: float = 0.0
    directory_ms: float = 0.0


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
    #: ``time.perf_counter()`` when it was handed to the stream (the audit's time at the agent).
    written_at: float = 0.0
    #: Told, once, what became of the job in the end: the agent's outcome, or None when no
    #: agent will ever answer it. Called on the caller's task while it waits (see
    #: :meth:`conclude`); later, by whoever ends the job, when the caller stopped waiting
    #: first: an agent that has the job may still bind, and the lockout must hear what it found.
    settled: Callable[[int | None], None] | None = None
    #: Whether the job has its end (:meth:`conclude`), and what :attr:`settled` is to hear.
    concluded: bool = False
    final_outcome: int | None = None

    def settle(self, outcome: int | None) -> None:
        """Report the job's final fate (once)."""
        callback, self.settled = self.settled, None
        if callback is not None:
            callback(outcome)

    def conclude(
        self, outcome: int | None, answer: Answer | None = None, error: PtaError | None = None
    ) -> None:
        """End the job with ``answer`` or ``error``; ``outcome`` is what the accounting hears.

        A caller still waiting hears both on its own task (it settles the job when it wakes,
        :meth:`settle_for_caller`); a caller that stopped waiting handed its accounting to the
        job, so it is settled here, on whatever task ended the job.
        """
        if self.future.done():
            self.settle(outcome)
            return
        self.concluded, self.final_outcome = True, outcome
        if answer is not None:
            self.future.set_result(answer)
        else:
            self.future.set_exception(error or Unavailable("the sign-in ended without an answer"))

    def settle_for_caller(self) -> bool:
        """On the caller's task, once it stops waiting: settle a concluded job; whether it was."""
        if self.concluded:
            self.settle(self.final_outcome)
        return self.concluded

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


@dataclass(frozen=True, slots=True)
class Brokers:
    """Told to an agent on its stream besides work: where every broker of the cluster is now."""

    agent_endpoints: tuple[str, ...]


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
    #: The stream's certificate: issued at and valid until (Unix time), for operators.
    issued_at: float = 0.0
    not_after: float = 0.0
    #: What the stream's writer sends: jobs, and now and then the cluster's brokers.
    outbox: asyncio.Queue[Job | Brokers] = field(default_factory=asyncio.Queue)
    in_flight: dict[str, Job] = field(default_factory=dict)
    draining: bool = False
    #: Set when the stream should end: drained and idle, or cut (then ``end_error`` says why).
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_error: PtaError | None = None
    #: Wall-clock times, for operators.
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    #: The agent's last health report on this stream (JSON, see broker/api/agent_health.py).
    health: str = ""

    def serves(self, domain: str) -> bool:
        """Whether new jobs for ``domain`` may be sealed to this connection."""
        return not self.draining and self.open and domain in self.domains

    @property
    def open(self) -> bool:
        """Whether its stream still takes work: not told to end (drained, or cut).

        An ended stream is detached a moment later, when its writer has stopped; a job sent
        to it meanwhile would be lost with it, and its agent (which may have read it) would
        refuse it as a replay on its next stream.
        """
        return not self.ended.is_set()

    @property
    def free(self) -> int:
        """How many more jobs the agent said it takes at once (none once it ended)."""
        return self.capacity - len(self.in_flight) if self.open else 0
