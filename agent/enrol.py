"""Enrolment: a one-time token in, a certificate and keys in the state directory out.

The broker is trusted by the CA certificate whose SHA-256 the token pins: the agent fetches the
chain the broker presents, keeps the certificate that matches the pin, and only then opens a
verified channel and sends anything. Nothing is trusted on first use.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import grpc
import structlog

from agent.identity import AgentIdentity
from pta import __version__, rpc, sealing, tls
from pta.config import parse_endpoint
from pta.errors import InvalidRequest, Overloaded, PtaError, Unauthenticated, Unavailable
from pta.tokens import parse_token
from pta.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    from pathlib import Path

log = structlog.get_logger()
ENROL_TIMEOUT = 15.0


def pinned_ca(broker: str, ca_sha256: str) -> bytes:
    """Fetch the broker's chain and return the CA certificate the token pins, as PEM.

    Raises:
        Unauthenticated: When no certificate the broker presents matches the pin.
    """
    host, port = parse_endpoint(broker)
    try:
        chain = tls.fetch_server_chain(host, port)
    except tls.ClientCertificateRequired:
        raise Unavailable(
            f"{broker} is the broker's agent endpoint, which only enrolled agents can dial: "
            "enrol at its public endpoint (the broker's --listen, 7443 by default)"
        ) from None
    except socket.gaierror:
        raise Unavailable(f"cannot find the broker's host {host!r}: check --broker") from None
    except ConnectionRefusedError:
        raise Unavailable(
            f"nothing listens at {broker}: is the broker running, and is this its public "
            "endpoint (--listen)?"
        ) from None
    except TimeoutError:
        raise Unavailable(f"no answer from {broker}: check --broker and the network") from None
    except OSError as error:  # ssl.SSLError too: not a TLS server, or not a broker
        raise Unavailable(f"cannot talk TLS with {broker}: {error.strerror or error}") from None
    for cert in chain:
        if tls.fingerprint(cert) == ca_sha256:
            return tls.cert_pem(cert)
    raise Unauthenticated(
        f"the broker at {broker} does not present the CA this token pins: wrong broker, "
        "or someone in between"
    )


async def enrol(broker: str, token_text: str, state_dir: Path) -> AgentIdentity:
    """Enrol with the broker and save the resulting identity in ``state_dir``.

    Args:
        broker: The broker's public endpoint, ``host:port``.
        token_text: The token printed by ``pta-broker token create``.
        state_dir: Where the keys and certificate are kept.

    Returns:
        The saved identity.
    """
    token = parse_token(token_text)
    ca_pem = await asyncio.to_thread(pinned_ca, broker, token.ca_sha256)
    tls_key = tls.new_private_key()
    envelope_key = sealing.generate_key()
    request = agent_pb2.EnrollRequest(
        token=str(token),
        csr_pem=tls.make_csr(tls_key, "pta-agent").decode(),
        envelope_public_key=sealing.public_key_bytes(envelope_key),
        hostname=socket.gethostname(),
        version=__version__,
    )
    async with grpc.aio.secure_channel(
        broker, tls.channel_credentials(ca_pem), options=rpc.CHANNEL_OPTIONS
    ) as channel:
        try:
            reply = await agent_pb2_grpc.AgentServiceStub(channel).Enroll(
                request, timeout=ENROL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None
    host, _ = parse_endpoint(broker)
    identity = AgentIdentity(
        agent_id=reply.agent_id,
        tenant=reply.tenant,
        broker=broker,
        agent_endpoint=reply.agent_endpoint or f"{host}:{reply.agent_port}",
        domains=tuple(reply.domains),
        ca_pem=ca_pem,
        cert_pem=reply.certificate_pem.encode(),
        tls_key_pem=tls.key_pem(tls_key),
        envelope_key=envelope_key,
    )
    identity.save(state_dir)
    log.info(
        "agent.enrolled",
        agent_id=identity.agent_id,
        tenant=identity.tenant,
        domains=list(identity.domains),
        agent_endpoint=identity.agent_endpoint,
    )
    return identity


def _refusal(error: grpc.aio.AioRpcError) -> PtaError:
    """The broker's refusal of an enrolment, as one sentence for the operator."""
    details = error.details() or error.code().name
    code = error.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(
            f"{details}: make a new one with `pta-broker token create --tenant TENANT`"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded(f"{details}: wait a few seconds and enrol again")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequest(details)
    return Unavailable(f"the broker could not enrol this agent now ({code.name}: {details})")
