"""One attached agent stream, from its welcome to its end: reader, writer and watch.

The reader takes results (acknowledgements first), draining notices and directory reports
(each domain's lockout threshold: stored and handed to the sign-in policy; nothing an agent
puts in one ends its stream); the writer sends validation batches, coalesced while the agent
is busy, and heartbeats when idle; the watch ends the stream when the dispatcher says so
(drained and idle, or cut). Whatever ends it, the caller (``broker/api/agents.py``) detaches
the connection and the dispatcher settles every job it held.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from broker.api import agent_health
from broker.dispatch.jobs import Answer, Brokers, Connection
from broker.store.records import ReportedPolicy
from pta import rpc
from pta.errors import InvalidRequest
from pta.names import normalize_domain
from pta.rpc import StreamEnded
from pta.v1 import agent_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import grpc

    from broker.dispatch.dispatcher import Dispatcher
    from broker.store.protocols import Store
    from broker.store.records import DirectoryPolicyRecord

log = structlog.get_logger()
#: A hello or a directory report names at most this many domains.
MAX_DOMAINS = 64
MAX_TEXT = 253
MAX_MESSAGE_CHARS = 512
#: A directory policy's ``source`` is for operators: a DN and a few words.
MAX_SOURCE_CHARS = 256
#: Directory reports closer together on one stream are dropped: each costs a store write, and
#: an agent sends one per stream and then at most one per 10 minutes.
MIN_REPORT_INTERVAL = 1.0
#: How many foreign domains one warning names.
_FOREIGN_SHOWN = 8
#: Missing this many heartbeat intervals means the agent is gone.
MISSED_HEARTBEATS = 3


def accepted_policies(conn: Connection, report: agent_pb2.DirectoryReport) -> list[ReportedPolicy]:
    """The policies of a report the broker keeps, whatever the agent sent.

    At most :data:`MAX_DOMAINS` are looked at; only the connection's own domains are kept
    (others are logged), each once (the first wins); ``source`` is cut to
    :data:`MAX_SOURCE_CHARS`.
    """
    if len(report.policies) > MAX_DOMAINS:
        log.warning(
            "directory.report_truncated",
            tenant=conn.tenant,
            agent_id=conn.agent_id,
            policies=len(report.policies),
            kept=MAX_DOMAINS,
        )
    kept: dict[str, ReportedPolicy] = {}
    foreign: list[str] = []
    for policy in report.policies[:MAX_DOMAINS]:
        try:
            domain = normalize_domain(policy.domain)
        except InvalidRequest:
            domain = ""
        if domain not in conn.domains:
            foreign.append(policy.domain[:64])
            continue
        kept.setdefault(
            domain,
            ReportedPolicy(
                domain=domain,
                known=policy.known,
                lockout_threshold=policy.lockout_threshold if policy.known else 0,
                source=policy.source[:MAX_SOURCE_CHARS],
            ),
        )
    if foreign:
        log.warning(
            "directory.foreign_domains_reported",
            tenant=conn.tenant,
            agent_id=conn.agent_id,
            count=len(foreign),
            domains=foreign[:_FOREIGN_SHOWN],
        )
    return list(kept.values())


def _reason(conn: Connection) -> str:
    if conn.end_error is not None:
        return conn.end_error.message
    return "drained" if conn.draining and conn.ended.is_set() else "stream ended"


class AgentStream:
    """Runs attached streams for the agent service; one instance serves them all."""

    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        heartbeat_interval: float,
        on_directory_report: Callable[[str, list[DirectoryPolicyRecord]], None] | None = None,
        brokers: Callable[[], tuple[str, ...]] = tuple,
    ) -> None:
        """Wire it (see :class:`broker.api.agents.AgentService`)."""
        self._brokers = brokers
        self._store = store
        self._dispatcher = dispatcher
        self._heartbeat = heartbeat_interval
        self._on_directory_report = on_directory_report

    async def serve(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        conn: Connection,
        messages: AsyncIterator[agent_pb2.AgentMessage],
    ) -> None:
        """Welcome an attached stream, then run its reader, writer and watch until it ends."""
        await context.write(
            agent_pb2.BrokerMessage(
                welcome=agent_pb2.Welcome(
                    tenant=conn.tenant,
                    domains=sorted(conn.domains),
                    heartbeat_interval_ms=int(self._heartbeat * 1000),
                    acks_in_results=True,
                    lost_requests_counted=True,
                    brokers=self._brokers(),
                )
            )
        )
        bound = log.bind(
            tenant=conn.tenant, agent_id=conn.agent_id, connection_id=conn.connection_id
        )
        bound.info("agent.connected", domains=sorted(conn.domains), capacity=conn.capacity)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive(messages, conn))
                group.create_task(self._send(context, conn))
                group.create_task(self._watch(conn))
        except* StreamEnded:
            pass
        finally:
            bound.info("agent.disconnected", reason=_reason(conn))

    async def _receive(
        self, messages: AsyncIterator[agent_pb2.AgentMessage], conn: Connection
    ) -> None:
        silence = self._heartbeat * MISSED_HEARTBEATS
        last: dict[str, float] = {}  # When each kind of report was last taken.
        while True:
            try:
                async with asyncio.timeout(silence):
                    message = await anext(messages, None)
            except TimeoutError:
                log.warning("agent.heartbeats_missed", agent_id=conn.agent_id, silence_s=silence)
                raise StreamEnded from None
            if message is None:
                raise StreamEnded
            conn.last_seen = time.time()
            kind = message.WhichOneof("kind")
            if kind == "results":
                self._complete(conn, message.results)
            elif kind == "acks":
                self._dispatcher.acknowledge(conn, list(message.acks.request_ids))
            elif kind == "draining":
                log.info(
                    "agent.draining",
                    agent_id=conn.agent_id,
                    connection_id=conn.connection_id,
                    reason=message.draining.reason[:MAX_TEXT],
                )
                self._dispatcher.drain(conn)
            elif kind in ("directory_report", "health"):
                self._reported(conn, message, last)
            elif kind == "hello":
                raise InvalidRequest("hello may be sent only once")
            # Heartbeats only prove liveness; kinds from newer agents are ignored.

    def _reported(
        self, conn: Connection, message: agent_pb2.AgentMessage, last: dict[str, float]
    ) -> None:
        """A report (directory policies, or health): taken at most once per its interval.

        Health is shown to operators once a second: more often would be work for nothing.
        """
        kind = str(message.WhichOneof("kind"))
        interval = MIN_REPORT_INTERVAL if kind == "directory_report" else agent_health.MIN_INTERVAL
        if time.monotonic() - last.get(kind, -interval) < interval:
            if kind == "directory_report":
                log.warning("directory.report_too_soon", agent_id=conn.agent_id)
            return
        last[kind] = time.monotonic()
        if kind == "health":
            conn.health = agent_health.accepted(message.health)
        else:
            self._directory_report(conn, message.directory_report)

    def _directory_report(self, conn: Connection, report: agent_pb2.DirectoryReport) -> None:
        """Store a report and pass it on; a failure here is logged, never ends the stream."""
        try:
            policies = accepted_policies(conn, report)
            if not policies:
                return
            records = self._store.record_directory_policies(conn.tenant, conn.agent_id, policies)
            for record in records:
                log.info(
                    "directory.policy_reported",
                    tenant=record.tenant,
                    agent_id=record.agent_id,
                    domain=record.domain,
                    known=record.known,
                    lockout_threshold=record.lockout_threshold,
                )
            if self._on_directory_report is not None:
                self._on_directory_report(conn.tenant, records)
        except Exception:  # Sign-ins ride on this stream: a report must not cost it.
            log.exception("directory.report_failed", tenant=conn.tenant, agent_id=conn.agent_id)

    def _complete(self, conn: Connection, results: agent_pb2.Results) -> None:
        if results.acks:  # Acknowledgements first, as if sent before.
            self._dispatcher.acknowledge(conn, list(results.acks))
        for result in results.results:
            answer = Answer(
                outcome=result.outcome,
                message=result.message[:MAX_MESSAGE_CHARS],
                agent_id=conn.agent_id,
                directory_ms=result.directory_us / 1000,
            )
            if not self._dispatcher.complete(conn, result.request_id, answer):
                log.warning(
                    "agent.unexpected_result",
                    agent_id=conn.agent_id,
                    tenant=conn.tenant,
                    request_id=result.request_id[:64],
                )

    async def _watch(self, conn: Connection) -> None:
        """End the stream when the dispatcher says so: drained and idle, or cut."""
        await conn.ended.wait()
        if conn.end_error is not None:
            raise conn.end_error
        raise StreamEnded

    async def _send(self, context: grpc.aio.ServicerContext[Any, Any], conn: Connection) -> None:
        while True:
            # Earlier jobs not answered yet: let more join this message.
            batch = await rpc.next_batch(
                conn.outbox, self._heartbeat, lambda: len(conn.in_flight) > conn.outbox.qsize() + 1
            )
            if batch is None:
                heartbeat = agent_pb2.Heartbeat(sent_unix_ms=int(time.time() * 1000))
                await context.write(agent_pb2.BrokerMessage(heartbeat=heartbeat))
                continue
            sending = []
            told: Brokers | None = None
            for job in batch:
                if isinstance(job, Brokers):
                    told = job  # The newest set says all: one waiting before it is stale.
                elif not job.done and job.connection_id == conn.connection_id:
                    sending.append(job)
                else:  # Its caller gave up while it waited here: never sent, slot free.
                    self._dispatcher.release(conn, job)
            requests = [
                agent_pb2.ValidationRequest(
                    request_id=job.request_id,
                    envelope=job.envelopes[conn.connection_id],
                    deadline_unix_ms=job.deadline_unix_ms,
                    domain=job.domain,
                )
                for job in sending
            ]
            if requests:
                written_at = time.perf_counter()
                for job in sending:  # From here the agent may get it: lost, it may have tried.
                    job.written, job.written_at = True, written_at
                await context.write(
                    agent_pb2.BrokerMessage(validations=agent_pb2.Validations(requests=requests))
                )
            if told is not None:  # After the work: no job waits on this write.
                endpoints = agent_pb2.Brokers(agent_endpoints=told.agent_endpoints)
                await context.write(agent_pb2.BrokerMessage(brokers=endpoints))
