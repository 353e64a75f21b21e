"""One sign-in's whole check: seal, commit, dispatch, await, send on after a lost agent.

The one way a check goes to an agent: the job, its envelopes, its sealing again and resending
and its withdrawal when the caller stops waiting all live here, over the
:class:`~broker.dispatch.dispatcher.Dispatcher`'s registry and queues.

The credentials live in this frame for the length of the check, as they live in the caller's
request: a job in a queue holds only envelopes. A job is sealed to the connections
:meth:`~broker.dispatch.dispatcher.Dispatcher.sealing_targets` names (one, two at most); when
none of them is left before any agent had it (:class:`NotSent`), or its agent was lost after
and the lockout lets another try, it is sealed here again, to the connections there are then.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.dispatch.dispatcher import NotSent
from broker.dispatch.jobs import LOST_AFTER_ACK, AgentLost, Answer, Job
from pta import sealing
from pta.errors import DeadlineExceeded, NoAgentAvailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker.dispatch.dispatcher import Dispatcher
    from broker.dispatch.jobs import Connection


async def check(  # noqa: PLR0913, PLR0917 - one sign-in's facts, by name
    dispatcher: Dispatcher,
    tenant: str,
    domain: str,
    request_id: str,
    plaintext: bytes,
    budget: float,
    *,
    settled: Callable[[int | None], None] | None = None,
    readmit: Callable[[float], Awaitable[bool]] | None = None,
    dispatching: Callable[[], Awaitable[None]] | None = None,
) -> Answer:
    """Seal ``plaintext`` to one or two connections, dispatch, await the one answer.

    Args:
        dispatcher: The registry and queues of the broker's agent connections.
        tenant: The tenant whose agents may check it.
        domain: The user's domain (which agents serve it).
        request_id: The sign-in's id, bound into each envelope.
        plaintext: The serialised credentials; sealed, never queued or kept after the check.
        budget: Seconds to wait for the answer.
        settled: Called exactly once with what became of the check in the end: the agent's
            outcome, even one that arrives after ``budget`` ran out, or None when no agent
            checked it.
        readmit: Asked, with the deadline, when the agent checking it was lost after it may
            have tried the password: True lets another agent try (``settled`` is then called
            again for that try). None: never.
        dispatching: Awaited once, when an agent is there to take it, just before the job is
            queued: from then on an agent may try the password (the caller commits its RPC
            then, so that no client resends it by itself).

    Raises:
        NoAgentAvailable: No agent of the tenant serving the domain is connected (before any
            agent had it).
        AgentLost: The agent checking it was lost, and no other agent tried it again.
        Overloaded: The tenant's queue is full.
        DeadlineExceeded: No answer within ``budget`` seconds.
    """
    loop = asyncio.get_running_loop()
    one = _Check(
        dispatcher,
        tenant,
        domain,
        request_id,
        plaintext,
        deadline=loop.time() + budget,
        deadline_ms=int((time.time() + budget) * 1000),
        settled=settled,
    )
    try:
        return await one.first(dispatching)
    except AgentLost:
        if readmit is None or not await readmit(one.deadline):
            raise
    return await one.send_on(readmit)


@dataclass(slots=True)
class _Check:
    """A check's facts, and the credentials, for the length of one :func:`check` call."""

    dispatcher: Dispatcher
    tenant: str
    domain: str
    request_id: str
    plaintext: bytes = field(repr=False)
    deadline: float
    deadline_ms: int
    settled: Callable[[int | None], None] | None
    job: Job | None = None

    def seal(self, conns: list[Connection]) -> dict[str, bytes]:
        """An envelope for each connection, bound to its agent, the request and the deadline."""
        return {
            conn.connection_id: sealing.seal(
                self.plaintext,
                conn.envelope_key,
                sealing.EnvelopeContext(
                    tenant=self.tenant,
                    agent_id=conn.agent_id,
                    request_id=self.request_id,
                    domain=self.domain,
                    deadline_unix_ms=self.deadline_ms,
                ),
            )
            for conn in conns
        }

    def reseal_if_gone(self, job: Job) -> None:
        """Seal ``job`` to the connections there are now if none it was sealed to is left.

        Raises:
            NoAgentAvailable: No connection of the tenant serves its domain any more.
        """
        if self.dispatcher.reachable(job):
            return
        conns = self.dispatcher.sealing_targets(self.tenant, self.domain)
        if not conns:
            raise NoAgentAvailable(f"no agent is connected for {self.domain}")
        job.envelopes = self.seal(conns)

    async def first(self, dispatching: Callable[[], Awaitable[None]] | None) -> Answer:
        """The first try, and tries again of a job no agent had (:class:`NotSent`)."""
        loop = asyncio.get_running_loop()
        handed = False  # Whether ``settled`` is the job's to call (once it is dispatched).
        try:
            job = self.job = Job(
                request_id=self.request_id,
                tenant=self.tenant,
                domain=self.domain,
                deadline=self.deadline,
                deadline_unix_ms=self.deadline_ms,
                envelopes={},
                future=loop.create_future(),
            )
            self.reseal_if_gone(job)
            if dispatching is not None:
                await dispatching()
            while True:
                self.reseal_if_gone(job)  # Its connections may have left while committing.
                self.dispatcher.submit(job)
                job.settled, handed = self.settled, True
                try:
                    return await _answer(self.dispatcher, job)
                except NotSent:
                    handed = False  # No agent had it: its accounting is this frame's again.
                    if loop.time() >= self.deadline:
                        raise DeadlineExceeded("no agent answered before the deadline") from None
                    job = self.job = job.resend(loop.create_future(), None)
        except AgentLost:
            raise  # The job's accounting said "may have tried"; send_on may follow.
        except BaseException:
            if not handed and self.settled is not None:  # No agent will check it.
                self.settled(None)
            raise

    async def send_on(self, readmit: Callable[[float], Awaitable[bool]]) -> Answer:
        """Send a job whose agent was lost to another one, for as long as the lockout lets it.

        The password may have been tried already: when no agent is left to take it, that is
        still what the caller hears (:class:`AgentLost`, never resent by a client), not that
        no agent is connected (resent to another broker by a client's retry policy).
        """
        loop = asyncio.get_running_loop()
        assert self.job is not None
        job = self.job
        while True:
            job = job.resend(loop.create_future(), self.settled)
            try:
                self.reseal_if_gone(job)
                self.dispatcher.submit(job)
            except NoAgentAvailable as error:
                job.settle(None)
                raise AgentLost(LOST_AFTER_ACK) from error
            except BaseException:
                job.settle(None)
                raise
            try:
                return await _answer(self.dispatcher, job)
            except AgentLost:
                if not await readmit(job.deadline):
                    raise
            except NotSent as error:  # No agent had this try: another may, until the deadline.
                if loop.time() >= job.deadline:
                    if self.settled is not None:
                        self.settled(None)
                    raise AgentLost(LOST_AFTER_ACK) from error
            except NoAgentAvailable as error:
                raise AgentLost(LOST_AFTER_ACK) from error


async def _answer(dispatcher: Dispatcher, job: Job) -> Answer:
    """Await a dispatched job's answer until its deadline; withdraw it either way."""
    try:
        async with asyncio.timeout_at(job.deadline):
            return await job.future
    except TimeoutError:
        raise DeadlineExceeded("no agent answered before the deadline") from None
    finally:
        # The accounting runs here, on the caller's task, for a job that has its end; one an
        # agent still holds is withdrawn and settles when the agent answers or is lost.
        if not job.settle_for_caller():
            dispatcher.withdraw(job)
