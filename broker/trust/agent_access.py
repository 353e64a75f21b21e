"""Who may hold an agent stream, checked when it is opened, when it attaches and every tick.

A stream's certificate is checked three times, because an agent may hold its hello back for
seconds and a stream may live for days: when the call arrives (the TLS peer's certificate
against the store), again at the moment the stream is attached to the dispatcher (no await
between that check and the attach, so a revocation committed while the hello was pending
holds), and on every maintenance tick for every live stream, whatever the store says changed
(:func:`recheck`). Revoked, expired or unknown: the stream is cut. Retired (the agent renewed
and used its new certificate): nothing new is sealed to it and it ends once idle.

Streams are also counted before the first await (:class:`StreamSlots`): every attached stream
costs each sign-in of its tenant one more seal on the broker's event loop, so one identity
must not hold many, nor one tenant a great many.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections import Counter
from typing import TYPE_CHECKING

import structlog

from pta import tls
from pta.errors import Overloaded, TenantMismatch, Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from broker.dispatch.dispatcher import Dispatcher
    from broker.store.protocols import AgentStore
    from broker.store.records import CertificateRecord

log = structlog.get_logger()

#: An agent needs one stream, two while it rotates its certificate.
MAX_STREAMS_PER_AGENT = 4
#: A tenant's agents together (Entra allows 40 agents a tenant; two streams each in rotation).
MAX_STREAMS_PER_TENANT = 96


def authenticate(
    agents: AgentStore, auth_context: Mapping[str, Iterable[bytes]]
) -> CertificateRecord:
    """The stored record of the caller's client certificate, if it may be used now.

    Raises:
        Unauthenticated: No certificate, one not issued to an enrolled agent, or one revoked,
            retired or expired.
        TenantMismatch: The certificate names another tenant or agent than the store.
    """
    cert = tls.peer_certificate(auth_context)
    if cert is None:
        raise Unauthenticated(
            "this call needs the agent's client certificate: dial the broker's agent endpoint"
        )
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        raise Unauthenticated(
            "this agent certificate has expired: enrol the agent again with a new token"
        )
    identity = tls.agent_identity(cert)
    record = agents.certificate(tls.serial_hex(cert))
    if identity is None or record is None:
        raise Unauthenticated("this certificate was not issued to an enrolled agent")
    if reason := record.refusal(now.timestamp()):
        raise Unauthenticated(reason)
    if identity != (record.tenant, record.agent_id):
        raise TenantMismatch("the certificate names another tenant or agent")
    return record


def still_valid(agents: AgentStore, record: CertificateRecord) -> None:
    """Check again, from the store, that a certificate may be used: call it just before attach.

    Raises:
        Unauthenticated: When it was revoked, retired, deleted or expired meanwhile.
    """
    current = agents.certificate(record.serial)
    if current is None:
        raise Unauthenticated("this certificate was not issued to an enrolled agent")
    if reason := current.refusal(time.time()):
        raise Unauthenticated(reason)


def recheck(agents: AgentStore, dispatcher: Dispatcher) -> None:
    """Hold every live stream to its certificate's state now: one store query per tick."""
    conns = dispatcher.connections()
    if not conns:
        return
    records = agents.certificates({c.serial for c in conns})
    now = time.time()
    for conn in conns:
        record = records.get(conn.serial)
        reason = "this certificate is no longer known" if record is None else record.refusal(now)
        if not reason or conn.ended.is_set():
            continue
        bound = log.bind(agent_id=conn.agent_id, connection_id=conn.connection_id)
        if record is not None and record.retired and not record.revoked:
            if not conn.draining:
                bound.warning("agent.certificate_retired", serial=conn.serial)
                dispatcher.drain(conn)
            continue
        bound.warning("agent.cut", serial=conn.serial, reason=reason)
        dispatcher.cut(conn, Unauthenticated(reason))


class StreamSlots:
    """Streams held or being opened, per agent and per tenant; taken before any await."""

    def __init__(
        self,
        *,
        per_agent: int = MAX_STREAMS_PER_AGENT,
        per_tenant: int = MAX_STREAMS_PER_TENANT,
    ) -> None:
        """Set the limits."""
        self._per_agent = per_agent
        self._per_tenant = per_tenant
        self._agents: Counter[str] = Counter()
        self._tenants: Counter[str] = Counter()

    @contextlib.contextmanager
    def reserve(self, record: CertificateRecord) -> Iterator[None]:
        """Hold a slot for one stream of ``record``'s agent for the body's duration.

        Raises:
            Overloaded: When the agent or its tenant holds as many as allowed already.
        """
        if self._agents[record.agent_id] >= self._per_agent:
            raise Overloaded("this agent has too many streams open")
        if self._tenants[record.tenant] >= self._per_tenant:
            raise Overloaded("this organisation's agents have too many streams open")
        self._agents[record.agent_id] += 1
        self._tenants[record.tenant] += 1
        try:
            yield
        finally:
            for counts, key in ((self._agents, record.agent_id), (self._tenants, record.tenant)):
                counts[key] -= 1
                if counts[key] <= 0:
                    del counts[key]

    def held(self, agent_id: str) -> int:
        """How many streams of an agent are open or opening."""
        return self._agents[agent_id]
