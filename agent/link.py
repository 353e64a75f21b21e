"""The agent's one outbound stream to the broker, kept up for as long as the agent runs.

Each session: dial the agent endpoint with the agent's certificate, say hello, then run a
reader (validation requests in, each checked in its own task), a writer (results out, several
per message when several are ready, heartbeats when idle) until the stream ends. Then wait a
jittered, growing delay and dial again.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import grpc
import structlog

from pta import __version__, rpc, tls
from pta.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    from agent.identity import AgentIdentity
    from agent.validation import Validator

log = structlog.get_logger()

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: A session that lasted this long was healthy: the next failure starts the backoff afresh.
HEALTHY_SESSION = 10.0
WELCOME_TIMEOUT = 10.0
DEFAULT_HEARTBEAT = 5.0


class _StreamEnded(Exception):
    """The broker closed the stream: ends the session's task group."""


class Link:
    """Keeps the Connect stream up and feeds its requests to the validator."""

    def __init__(
        self,
        identity: AgentIdentity,
        validator: Validator,
        *,
        domains: tuple[str, ...],
        max_in_flight: int,
    ) -> None:
        """Prepare the link; nothing is dialled until :meth:`run`.

        Args:
            identity: The enrolled identity (certificate, keys, endpoints).
            validator: Answers each validation request.
            domains: The domains to offer in hello; empty means all of the tenant's.
            max_in_flight: How many requests the broker may send at once.
        """
        self._identity = identity
        self._validator = validator
        self._domains = domains
        self._max_in_flight = max_in_flight
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Connect and reconnect until cancelled."""
        delay = BACKOFF_INITIAL
        while True:
            started = time.monotonic()
            try:
                await self._session()
                log.info("link.closed_by_broker")
            except grpc.aio.AioRpcError as error:
                log.warning("link.failed", status=error.code().name, details=error.details() or "")
            finally:
                self.connected.clear()
            if time.monotonic() - started > HEALTHY_SESSION:
                delay = BACKOFF_INITIAL
            pause = random.uniform(0, delay)  # noqa: S311 - jitter, not crypto
            log.info("link.reconnecting", in_seconds=round(pause, 2))
            await asyncio.sleep(pause)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        identity = self._identity
        credentials = tls.channel_credentials(
            identity.ca_pem, identity.tls_key_pem, identity.cert_pem
        )
        async with grpc.aio.secure_channel(
            identity.agent_endpoint, credentials, options=rpc.CHANNEL_OPTIONS
        ) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            await call.write(
                agent_pb2.AgentMessage(
                    hello=agent_pb2.Hello(
                        agent_id=identity.agent_id,
                        version=__version__,
                        domains=list(self._domains),
                        max_in_flight=self._max_in_flight,
                    )
                )
            )
            async with asyncio.timeout(WELCOME_TIMEOUT):
                first = await call.read()
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "welcome":
                await call.done_writing()
                return
            welcome = first.welcome
            heartbeat = welcome.heartbeat_interval_ms / 1000 or DEFAULT_HEARTBEAT
            log.info("link.connected", tenant=welcome.tenant, domains=list(welcome.domains))
            self.connected.set()
            results: asyncio.Queue[agent_pb2.ValidationResult] = asyncio.Queue()
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read(call, group, results))
                    group.create_task(self._write(call, results, heartbeat))
            except* _StreamEnded:
                pass
            finally:
                call.cancel()

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.BrokerMessage],
        group: asyncio.TaskGroup,
        results: asyncio.Queue[agent_pb2.ValidationResult],
    ) -> None:
        while True:
            message = await call.read()
            if not isinstance(message, agent_pb2.BrokerMessage):  # grpc.aio.EOF
                raise _StreamEnded
            kind = message.WhichOneof("kind")
            if kind == "validations":
                for request in message.validations.requests:
                    group.create_task(self._answer(request, results))
            elif kind == "drain":
                log.info("link.drain_requested", reason=message.drain.reason)

    async def _answer(
        self,
        request: agent_pb2.ValidationRequest,
        results: asyncio.Queue[agent_pb2.ValidationResult],
    ) -> None:
        results.put_nowait(await self._validator.validate(request))

    async def _write(
        self,
        call: grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.BrokerMessage],
        results: asyncio.Queue[agent_pb2.ValidationResult],
        heartbeat: float,
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    first = await results.get()
            except TimeoutError:
                beat = agent_pb2.Heartbeat(sent_unix_ms=int(time.time() * 1000))
                await call.write(agent_pb2.AgentMessage(heartbeat=beat))
                continue
            batch = [first]
            while not results.empty():
                batch.append(results.get_nowait())
            await call.write(agent_pb2.AgentMessage(results=agent_pb2.Results(results=batch)))
