"""Certificate renewal: a new TLS key and a new envelope key, certified over the current identity.

The agent renews two thirds into its certificate's life, so a broker that is down or a failed
attempt leaves a third of the lifetime for retries; it warns when less than a tenth is left.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import grpc
import structlog

from pta import rpc, sealing, tls
from pta.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    import datetime

    from cryptography import x509

    from agent.identity import AgentIdentity

log = structlog.get_logger()
RENEW_TIMEOUT = 15.0
#: Below this share of its life left, every failed renewal is logged as a warning.
WARN_BELOW = 0.10


def _cert(identity: AgentIdentity) -> x509.Certificate:
    return tls.load_cert(identity.cert_pem)


def expires_at(identity: AgentIdentity) -> datetime.datetime:
    """When the identity's certificate stops working."""
    return _cert(identity).not_valid_after_utc


def renew_at(identity: AgentIdentity) -> datetime.datetime:
    """When the identity should be renewed."""
    return tls.renewal_due(_cert(identity))


def life_left(identity: AgentIdentity, now: datetime.datetime) -> float:
    """The share of the certificate's validity still ahead, from 1.0 down to 0.0."""
    cert = _cert(identity)
    total = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
    left = (cert.not_valid_after_utc - now).total_seconds()
    return max(0.0, left / total) if total > 0 else 0.0


async def renew(identity: AgentIdentity, endpoint: str = "") -> AgentIdentity:
    """Ask a broker for a new certificate on fresh keys, over the current certificate.

    ``endpoint``: the broker's agent endpoint (default: the identity's, enrolled with); any
    broker of a cluster renews for all of them, since they share the CA and the store.

    Returns:
        The new identity (not yet saved).

    Raises:
        grpc.aio.AioRpcError: When the broker refuses or cannot be reached.
    """
    tls_key = tls.new_private_key()
    envelope_key = sealing.generate_key()
    request = agent_pb2.RenewRequest(
        csr_pem=tls.make_csr(tls_key, "pta-agent").decode(),
        envelope_public_key=sealing.public_key_bytes(envelope_key),
    )
    credentials = tls.channel_credentials(identity.ca_pem, identity.tls_key_pem, identity.cert_pem)
    async with grpc.aio.secure_channel(
        endpoint or identity.agent_endpoint, credentials, options=rpc.CHANNEL_OPTIONS
    ) as channel:
        reply: agent_pb2.RenewResponse = await agent_pb2_grpc.AgentServiceStub(channel).Renew(
            request, timeout=RENEW_TIMEOUT
        )
    return dataclasses.replace(
        identity,
        cert_pem=reply.certificate_pem.encode(),
        ca_pem=reply.ca_chain_pem.encode() or identity.ca_pem,
        tls_key_pem=tls.key_pem(tls_key),
        envelope_key=envelope_key,
    )
