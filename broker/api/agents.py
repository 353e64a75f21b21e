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
from typing import TYPE_CHECKING, Any

import structlog

from broker.api.agent_stream import MAX_DOMAINS, MAX_TEXT, AgentStream
from broker.dispatch.jobs import Connection
from broker.policy.accounts import hello_rules
from broker.policy.ratelimit import RateLimiter, peer_address
from broker.trust import agent_access
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

    from broker.dispatch.dispatcher import Dispatcher
    from broker.policy.accounts import AccountRule
    from broker.store.protocols import Store
    from broker.store.records import CertificateRecord, DirectoryPolicyRecord
    from broker.trust.ca import CertificateAuthority

log = structlog.get_logger()

HELLO_TIMEOUT = 10.0
DEFAULT_CAPACITY = 16
MAX_CAPACITY = 1024
#: Enrolments a second from one address, and the burst allowed: an installer enrols a few
#: agents; a guesser of tokens gets no more tries than that.
ENROL_RATE = 1.0
ENROL_BURST = 10.0


def _check_envelope_key(raw: bytes) -> None:
    try:
        sealing.load_public_key(raw)
    except ValueError as error:
        raise InvalidRequest(str(error)) from None


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
        brokers: Callable[[], tuple[str, ...]] = tuple,
    ) -> None:
        """Wire the service (see :class:`broker.config.BrokerConfig` for the values).

        ``on_directory_report(tenant, records)`` is called with each directory report once it
        is stored: the sign-in policy checks there that its own lockout trips first.
        ``on_accounts(tenant, agent_id, rules, settings)`` is called with what a hello says of
        how each served domain's names map to directory accounts, and the digests of its
        directories' settings, before the stream is attached: the sign-in policy keys its
        counts on those accounts, and forgets refused passwords when the settings changed.
        ``brokers()`` is what each Welcome says of the cluster's brokers (empty: none).
        """
        self._streams = AgentStream(
            store=store,
            dispatcher=dispatcher,
            heartbeat_interval=heartbeat_interval,
            on_directory_report=on_directory_report,
            brokers=brokers,
        )
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
                    await self._streams.serve(context, conn, messages)
                finally:
                    self._dispatcher.detach(conn)

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
            issued_at=record.issued_at,
            not_after=record.not_after,
        )
