"""``pta.v1.AgentService``: enrolment, and each agent's one long-lived Connect stream.

Connect authenticates the stream by the client certificate (the agent endpoint's TLS already
required one from our CA), checks the tenant and agent it names against the store, then runs
a reader and a writer until either side ends. Whatever ends it, the connection is detached and
every job it held is settled. Besides results, the reader takes the agent's directory reports
(each domain's lockout threshold), keeps them in the store and hands them to the broker's
sign-in policy; nothing an agent puts in one ends its stream.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any

import structlog

from broker import agent_access
from broker.accounts import hello_rules
from broker.jobs import Answer, Connection
from broker.ratelimit import RateLimiter, peer_address
from broker.store import ReportedPolicy
from pta import sealing, tls
from pta.errors import (
    InvalidRequest,
    PermissionDenied,
    TenantMismatch,
    Unauthenticated,
    rpc_errors,
)
from pta.names import normalize_domain
from pta.tokens import parse_token
from pta.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    import datetime
    from collections.abc import AsyncIterator, Callable

    import grpc

    from broker.accounts import AccountRule
    from broker.agent_store import CertificateRecord
    from broker.ca import CertificateAuthority
    from broker.dispatch import Dispatcher
    from broker.store import DirectoryPolicyRecord, Store

log = structlog.get_logger()

HELLO_TIMEOUT = 10.0
DEFAULT_CAPACITY = 16
MAX_CAPACITY = 1024
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
#: Enrolments a second from one address, and the burst allowed: an installer enrols a few
#: agents; a guesser of tokens gets no more tries than that.
ENROL_RATE = 1.0
ENROL_BURST = 10.0
#: Missing this many heartbeat intervals means the agent is gone.
MISSED_HEARTBEATS = 3
#: While an agent is busy with earlier sign-ins, wait this long for more before writing, so
#: that one stream message carries several: each message costs both sides a system call and
#: wake-ups. An idle agent gets each sign-in at once.
COALESCE_SECONDS = 0.001


class _StreamEnded(Exception):
    """The agent closed its side, or went silent: ends the stream's task group."""


def _check_envelope_key(raw: bytes) -> None:
    try:
        sealing.load_public_key(raw)
    except ValueError as error:
        raise InvalidRequest(str(error)) from None


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


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    """Enrols agents and keeps their streams."""

    def __init__(  # noqa: PLR0913 - wiring
        self,
        *,
        store: Store,
        ca: CertificateAuthority,
        dispatcher: Dispatcher,
        cert_lifetime: datetime.timedelta,
        heartbeat_interval: float,
        agent_endpoint: str,
        agent_port: int,
        on_directory_report: Callable[[str, list[DirectoryPolicyRecord]], None] | None = None,
        enrol_limiter: RateLimiter | None = None,
        on_accounts: Callable[[str, str, dict[str, AccountRule], bytes], None] | None = None,
    ) -> None:
        """Wire the service (see :class:`broker.config.BrokerConfig` for the values).

        ``on_directory_report(tenant, records)`` is called with each directory report once it
        is stored: the sign-in policy checks there that its own lockout trips first.
        ``on_accounts(tenant, agent_id, rules, settings)`` is called with what a hello says of
        how each served domain's names map to directory accounts, and the digests of its
        directories' settings, before the stream is attached: the sign-in policy keys its
        counts on those accounts, and forgets refused passwords when the settings changed.
        """
        self._on_directory_report = on_directory_report
        self._enrol_limiter = enrol_limiter or RateLimiter(ENROL_RATE, ENROL_BURST)
        self._slots = agent_access.StreamSlots()
        self._on_accounts = on_accounts
        self._store = store
        self._ca = ca
        self._dispatcher = dispatcher
        self._cert_lifetime = cert_lifetime
        self._heartbeat = heartbeat_interval
        self._agent_endpoint = agent_endpoint
        self._agent_port = agent_port

    async def Enroll(  # noqa: N802 - the contract's name
        self,
        request: agent_pb2.EnrollRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agent_pb2.EnrollResponse:
        """Trade a one-time token and a CSR for an agent certificate.

        The cheap checks come first (the caller's rate, then the token, in constant time):
        nobody who holds no valid token gets the broker to verify a CSR or sign anything.
        """
        async with rpc_errors(context):
            self._enrol_limiter.check(peer_address(context.peer()))
            token = parse_token(request.token)
            if token.ca_sha256 != self._ca.fingerprint:
                raise Unauthenticated("this enrolment token was issued by another broker")
            self._store.check_token(token)
            if len(request.hostname) > MAX_TEXT or len(request.version) > MAX_TEXT:
                raise InvalidRequest("hostname or version too long")
            _check_envelope_key(request.envelope_public_key)
            agent_id = "agt-" + secrets.token_hex(8)
            # Check the CSR before spending the token; sign it for real only once it is spent.
            self._ca.sign_agent(
                request.csr_pem, tenant="check", agent_id=agent_id, lifetime=self._cert_lifetime
            )
            tenant = self._store.consume_token(token)
            cert = self._ca.sign_agent(
                request.csr_pem, tenant=tenant, agent_id=agent_id, lifetime=self._cert_lifetime
            )
            self._store.agents.add(
                agent_id=agent_id,
                tenant=tenant,
                hostname=request.hostname,
                version=request.version,
                serial=tls.serial_hex(cert),
                envelope_public_key=request.envelope_public_key,
                not_after=cert.not_valid_after_utc.timestamp(),
            )
            log.info(
                "agent.enrolled",
                tenant=tenant,
                agent_id=agent_id,
                hostname=request.hostname,
                token_id=token.token_id,
                serial=tls.serial_hex(cert),
            )
            return agent_pb2.EnrollResponse(
                agent_id=agent_id,
                tenant=tenant,
                certificate_pem=tls.cert_pem(cert).decode(),
                ca_chain_pem=self._ca.cert_pem.decode(),
                domains=sorted(self._store.tenant_domains(tenant)),
                agent_endpoint=self._agent_endpoint,
                agent_port=self._agent_port,
            )

    async def Connect(  # noqa: N802 - the contract's name
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Hold one agent's stream (see the module docstring)."""
        async with rpc_errors(context):
            record = agent_access.authenticate(self._store.agents, context.auth_context())
            with self._slots.reserve(record):  # Before the first await: no race past the cap.
                messages = aiter(request_iterator)
                conn = await self._hello(messages, record)
                # The hello may have been held back for seconds: check again, then attach with
                # no await in between, so a revocation committed meanwhile holds.
                agent_access.still_valid(self._store.agents, record)
                self._dispatcher.attach(conn)
                try:
                    self._store.agents.attached(record)
                    await self._serve_stream(context, conn, messages)
                finally:
                    self._dispatcher.detach(conn)

    async def _serve_stream(
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
        except* _StreamEnded:
            pass
        finally:
            bound.info("agent.disconnected", reason=_reason(conn))

    async def Renew(  # noqa: N802 - the contract's name
        self,
        request: agent_pb2.RenewRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agent_pb2.RenewResponse:
        """Issue a new certificate, on a new key, to the agent the caller's certificate names."""
        async with rpc_errors(context):
            record = agent_access.authenticate(self._store.agents, context.auth_context())
            _check_envelope_key(request.envelope_public_key)
            cert = self._ca.sign_agent(
                request.csr_pem,
                tenant=record.tenant,
                agent_id=record.agent_id,
                lifetime=self._cert_lifetime,
            )
            # Refused if it was retired or revoked meanwhile; an earlier renewal of it that was
            # never used is retired: only one renewal of a certificate can ever be used.
            self._store.agents.renew(
                record,
                serial=tls.serial_hex(cert),
                envelope_public_key=request.envelope_public_key,
                not_after=cert.not_valid_after_utc.timestamp(),
            )
            log.info(
                "agent.renewed",
                tenant=record.tenant,
                agent_id=record.agent_id,
                old_serial=record.serial,
                serial=tls.serial_hex(cert),
                not_after=cert.not_valid_after_utc.isoformat(),
            )
            return agent_pb2.RenewResponse(
                certificate_pem=tls.cert_pem(cert).decode(),
                ca_chain_pem=self._ca.cert_pem.decode(),
            )

    async def _hello(
        self, messages: AsyncIterator[agent_pb2.AgentMessage], record: CertificateRecord
    ) -> Connection:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                first = await anext(messages, None)
        except TimeoutError:
            raise InvalidRequest("no hello within the time allowed") from None
        if first is None or first.WhichOneof("kind") != "hello":
            raise InvalidRequest("the first message on Connect must be a hello")
        hello = first.hello
        if hello.agent_id != record.agent_id:
            raise TenantMismatch("hello names another agent than the certificate")
        if len(hello.domains) > MAX_DOMAINS:
            raise InvalidRequest("too many domains in hello")
        verified = self._store.tenant_domains(record.tenant)
        asked = {normalize_domain(d) for d in hello.domains} or set(verified)
        if unverified := asked - verified:
            log.warning(
                "agent.unverified_domains", agent_id=record.agent_id, domains=sorted(unverified)
            )
        domains = frozenset(asked & verified)
        if not domains:
            raise PermissionDenied("the agent serves none of its tenant's verified domains")
        if self._on_accounts is not None:
            rules = hello_rules(hello.directories, domains)
            settings = b"".join(d.settings_digest[:64] for d in hello.directories)
            self._on_accounts(record.tenant, record.agent_id, rules, settings)
        capacity = hello.max_in_flight or DEFAULT_CAPACITY
        return Connection(
            connection_id=secrets.token_hex(8),
            agent_id=record.agent_id,
            tenant=record.tenant,
            domains=domains,
            capacity=min(capacity, MAX_CAPACITY),
            envelope_key=sealing.load_public_key(record.envelope_public_key),
            version=hello.version[:MAX_TEXT],
            serial=record.serial,
        )

    async def _receive(
        self, messages: AsyncIterator[agent_pb2.AgentMessage], conn: Connection
    ) -> None:
        silence = self._heartbeat * MISSED_HEARTBEATS
        last_report = -MIN_REPORT_INTERVAL
        while True:
            try:
                async with asyncio.timeout(silence):
                    message = await anext(messages, None)
            except TimeoutError:
                log.warning("agent.heartbeats_missed", agent_id=conn.agent_id, silence_s=silence)
                raise _StreamEnded from None
            if message is None:
                raise _StreamEnded
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
            elif kind == "directory_report":
                if time.monotonic() - last_report < MIN_REPORT_INTERVAL:
                    log.warning("directory.report_too_soon", agent_id=conn.agent_id)
                    continue
                last_report = time.monotonic()
                self._directory_report(conn, message.directory_report)
            elif kind == "hello":
                raise InvalidRequest("hello may be sent only once")
            # Heartbeats only prove liveness; kinds from newer agents are ignored.

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
        raise _StreamEnded

    async def _send(self, context: grpc.aio.ServicerContext[Any, Any], conn: Connection) -> None:
        while True:
            try:
                async with asyncio.timeout(self._heartbeat):
                    job = await conn.outbox.get()
            except TimeoutError:
                heartbeat = agent_pb2.Heartbeat(sent_unix_ms=int(time.time() * 1000))
                await context.write(agent_pb2.BrokerMessage(heartbeat=heartbeat))
                continue
            if len(conn.in_flight) > conn.outbox.qsize() + 1:  # Earlier jobs not answered yet.
                await asyncio.sleep(COALESCE_SECONDS)
            batch = [job]
            while not conn.outbox.empty():
                batch.append(conn.outbox.get_nowait())
            sending = []
            for job in batch:
                if not job.done and job.connection_id == conn.connection_id:
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
                for job in sending:  # From here the agent may get it: lost, it may have tried.
                    job.written = True
                await context.write(
                    agent_pb2.BrokerMessage(validations=agent_pb2.Validations(requests=requests))
                )
