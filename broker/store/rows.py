"""What both SQL stores make of their rows: the records, assembled one way.

The SQLite and PostgreSQL stores (:mod:`broker.store.sqlite`, :mod:`broker.store.postgres`)
speak different dialects to different drivers, but select the same columns in the same order;
what they do with the rows they get back (records, maps, the listing of agents) is here, once.
Knows no SQL and imports no driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from broker.policy.lockout import Counter
from broker.store.records import (
    AdministratorRecord,
    AgentRecord,
    CertificateRecord,
    ConnectionStatus,
    CounterKey,
    DirectoryPolicyRecord,
    ReportedPolicy,
)
from pta.errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: A row as a driver gives it: the columns each function names, in that order.
Row: TypeAlias = "Sequence[Any]"


def certificate(row: Row) -> CertificateRecord:
    """A certificate with its agent's tenant and state.

    Columns: serial, agent id, tenant, envelope public key, not after, whether the agent is
    revoked, whether the certificate is retired, its predecessor, issued at.
    """
    serial, agent_id, tenant, key, not_after, revoked, retired, predecessor, issued_at = row
    return CertificateRecord(
        serial=serial,
        agent_id=agent_id,
        tenant=tenant,
        envelope_public_key=bytes(key),
        not_after=not_after,
        revoked=bool(revoked),
        retired=bool(retired),
        predecessor=predecessor,
        issued_at=issued_at,
    )


def stream(row: Row, domains: list[str]) -> ConnectionStatus:
    """A reported stream; its domains decoded by the store, which keeps them its own way.

    Columns: id, agent id, version, serial, domains, connected at, last seen, in flight,
    broker id, health.
    """
    conn_id, agent_id, version, serial, _, connected, seen, in_flight, broker, health = row
    return ConnectionStatus(
        connection_id=conn_id,
        agent_id=agent_id,
        version=version,
        serial=serial,
        domains=domains,
        connected_at=connected,
        last_seen=seen,
        in_flight=in_flight,
        broker_id=broker,
        health=health,
    )


def agents(
    agent_rows: Iterable[Row], usable_rows: Iterable[Row], streams: Iterable[ConnectionStatus]
) -> list[AgentRecord]:
    """The operators' listing of agents.

    Args:
        agent_rows: Every agent (id, tenant, hostname, version, enrolled at, revoked at), in
            the listing's order.
        usable_rows: (agent id, serial, not after) of every certificate that can still connect,
            oldest first.
        streams: The fresh reported streams, in order.
    """
    usable: dict[str, list[tuple[str, float]]] = {}
    for agent_id, serial, not_after in usable_rows:
        usable.setdefault(agent_id, []).append((serial, not_after))
    by_agent: dict[str, list[ConnectionStatus]] = {}
    for status in streams:
        by_agent.setdefault(status.agent_id, []).append(status)
    return [
        AgentRecord(
            agent_id=agent_id,
            tenant=tenant,
            hostname=hostname,
            version=version,
            enrolled_at=enrolled_at,
            revoked_at=revoked_at,
            certificates=[] if revoked_at is not None else usable.get(agent_id, []),
            connections=by_agent.get(agent_id, []),
        )
        for agent_id, tenant, hostname, version, enrolled_at, revoked_at in agent_rows
    ]


def directory_policies(
    tenant: str, agent_id: str, policies: Sequence[ReportedPolicy], now: float
) -> list[DirectoryPolicyRecord]:
    """An agent's report as it is kept: an unknown threshold is stored as 0."""
    return [
        DirectoryPolicyRecord(
            tenant=tenant,
            domain=p.domain,
            agent_id=agent_id,
            known=p.known,
            lockout_threshold=p.lockout_threshold if p.known else 0,
            source=p.source,
            reported_at=now,
        )
        for p in policies
    ]


def directory_policy(row: Row) -> DirectoryPolicyRecord:
    """A kept report: tenant, domain, agent id, known, threshold, source, reported at."""
    tenant, domain, agent_id, known, threshold, source, reported_at = row
    return DirectoryPolicyRecord(
        tenant=tenant,
        domain=domain,
        agent_id=agent_id,
        known=bool(known),
        lockout_threshold=threshold,
        source=source,
        reported_at=reported_at,
    )


def tenants(names: Iterable[Row], domains: Iterable[Row]) -> dict[str, list[str]]:
    """Every tenant (by name, in order) with its (suffix, tenant) domains, in order."""
    result: dict[str, list[str]] = {name: [] for (name,) in names}
    for suffix, tenant in domains:
        result[tenant].append(suffix)
    return result


def by_broker(rows: Iterable[Row]) -> dict[str, dict[str, str]]:
    """(broker id, name, value) rows as each broker's status."""
    result: dict[str, dict[str, str]] = {}
    for broker_id, name, value in rows:
        result.setdefault(broker_id, {})[name] = value
    return result


def counters(rows: Iterable[Row]) -> dict[CounterKey, Counter]:
    """(tenant, user, location, failures, lockouts, locked until, last failure) rows, by key."""
    return {
        (tenant, user, location): Counter(failures, lockouts, locked_until, last)
        for tenant, user, location, failures, lockouts, locked_until, last in rows
    }


def familiar(rows: Iterable[Row]) -> dict[tuple[str, str], dict[str, float]]:
    """(tenant, user, prefix, last success) rows as each user's familiar networks."""
    result: dict[tuple[str, str], dict[str, float]] = {}
    for tenant, user, prefix, last in rows:
        result.setdefault((tenant, user), {})[prefix] = last
    return result


def check_banned_total(tenant: str, total: int, limit: int) -> None:
    """Refuse a banned list grown past its limit (the transaction is then undone).

    Raises:
        InvalidRequest: When ``total`` is over ``limit``.
    """
    if total > limit:
        raise InvalidRequest(f"tenant {tenant} would have {total} banned terms: at most {limit}")


def administrator(row: Row) -> AdministratorRecord:
    """An administrator certificate. Columns: name, serial, issued at, not after, revoked at."""
    name, serial, issued_at, not_after, revoked_at = row
    return AdministratorRecord(
        name=name, serial=serial, issued_at=issued_at, not_after=not_after, revoked_at=revoked_at
    )
