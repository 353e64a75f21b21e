"""Who may reach the broker: enrolment tokens, and the agents enrolled with them."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from broker.admin.tenants import iso
from broker.store.records import STATUS_FRESHNESS
from pta.config import parse_duration
from pta.errors import FailedPrecondition, InvalidRequest, NotFound, PtaError
from pta.tokens import TOKEN_ID, parse_token
from pta.v1 import admin_pb2

if TYPE_CHECKING:
    from broker.admin.context import AdminContext
    from broker.store.records import AgentRecord

DEFAULT_ENROLMENT_TTL = "1h"


def create_token(
    admin: AdminContext, request: admin_pb2.CreateTokenRequest
) -> admin_pb2.CreateTokenResponse:
    """A one-time token that enrols one agent of the tenant, pinning the CA it must find.

    Raises:
        FailedPrecondition: No broker has served the store yet, so there is no CA to pin.
        NotFound: No such tenant.
    """
    fingerprint = admin.ca_fingerprint()
    if fingerprint is None:
        raise FailedPrecondition(
            "no broker has served this store yet: start one with `pta-broker serve --store …`"
            " first (its CA is what tokens pin)"
        )
    ttl = parse_duration(request.ttl or DEFAULT_ENROLMENT_TTL)
    token = admin.store.create_token(request.tenant, ttl, fingerprint)
    return admin_pb2.CreateTokenResponse(
        token=str(token), id=token.token_id, expires_at=time.time() + ttl
    )


def list_tokens(
    admin: AdminContext, request: admin_pb2.ListTokensRequest
) -> admin_pb2.ListTokensResponse:
    """Every token, newest first: never a secret (the store keeps only hashes)."""
    del request
    now = time.time()
    return admin_pb2.ListTokensResponse(
        tokens=[
            admin_pb2.TokenInfo(
                id=t.token_id,
                tenant=t.tenant,
                created_at=t.created_at,
                expires_at=t.expires_at,
                used=t.used_at is not None,
                expired=t.expires_at <= now,
            )
            for t in admin.store.list_tokens()
        ]
    )


def delete_token(
    admin: AdminContext, request: admin_pb2.DeleteTokenRequest
) -> admin_pb2.DeleteTokenResponse:
    """Delete a token, named by its id or by the whole token.

    Raises:
        NotFound: There is no such token.
    """
    token_id = token_id_of(request.id)
    if not admin.store.delete_token(token_id):
        raise NotFound(f"no token {token_id}")
    return admin_pb2.DeleteTokenResponse(id=token_id)


def token_id_of(text: str) -> str:
    """A token's id, from the id itself or from a whole token (whose secret is never echoed).

    Raises:
        InvalidRequest: When it is neither; the message does not repeat what was given.
    """
    if TOKEN_ID.fullmatch(text):
        return text
    try:
        return parse_token(text).token_id
    except PtaError:
        raise InvalidRequest(
            "give the token's id (16 hex digits, as `token list` shows) or the whole token"
        ) from None


def list_agents(
    admin: AdminContext, request: admin_pb2.ListAgentsRequest
) -> admin_pb2.ListAgentsResponse:
    """Every agent, its certificates, the streams every broker reported lately."""
    del request
    return admin_pb2.ListAgentsResponse(
        agents=[_agent(a) for a in admin.store.agents.list(fresh_within=STATUS_FRESHNESS)]
    )


def _agent(a: AgentRecord) -> admin_pb2.AgentInfo:
    info = admin_pb2.AgentInfo(
        id=a.agent_id,
        tenant=a.tenant,
        hostname=a.hostname,
        revoked=a.revoked_at is not None,
        connected=bool(a.connections),
        version=a.connections[-1].version if a.connections else a.version,
        domains=sorted({d for c in a.connections for d in c.domains}),
        serial=a.certificates[-1][0] if a.certificates else "",
        not_after=iso(a.certificates[-1][1]) if a.certificates else "",
        certificates=[
            admin_pb2.AgentCertificate(serial=s, not_after=iso(t)) for s, t in a.certificates
        ],
        in_flight=sum(c.in_flight for c in a.connections),
        streams=len(a.connections),
        brokers=sorted({c.broker_id for c in a.connections}),
    )
    if a.connections:
        info.last_heartbeat = max(c.last_seen for c in a.connections)
    _health(info, a)
    return info


def _health(info: admin_pb2.AgentInfo, a: AgentRecord) -> None:
    """What the agent last said of itself on any stream (one process: the same on each)."""
    reports = [c for c in a.connections if c.health]
    if not reports:
        return
    said = json.loads(max(reports, key=lambda c: c.last_seen).health)
    info.checks.CopyFrom(
        admin_pb2.AgentChecks(
            handled=said["handled"],
            succeeded=said["succeeded"],
            failed=said["failed"],
            errors=said["errors"],
            since=iso(said["started_at"]),
        )
    )
    info.directories.extend(
        admin_pb2.AgentDirectoryServer(
            server=s["server"],
            reachable=s["reachable"],
            last_error=s["last_error"],
            last_error_at=iso(s["last_error_at"]) if s["last_error"] else "",
            median_bind_ms=s["median_bind_ms"],
            binds=s["binds"],
        )
        for s in said["servers"]
    )


def revoke_agent(
    admin: AdminContext, request: admin_pb2.RevokeAgentRequest
) -> admin_pb2.RevokeAgentResponse:
    """Revoke an agent: every broker cuts its streams within a second, and it never renews.

    Raises:
        NotFound: There is no such agent.
    """
    if not admin.store.agents.revoke(request.agent_id):
        raise NotFound(f"no agent {request.agent_id}")
    return admin_pb2.RevokeAgentResponse(agent_id=request.agent_id)
