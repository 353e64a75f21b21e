"""The agent's outbound streams to the brokers, each kept up for as long as it is wanted.

A :class:`Link` is one identity's stream to one broker. Each session: dial that broker's agent
endpoint with the identity's certificate, say hello, then run a reader (validation requests in,
each batch opened and checked in a task of its own, within the agent's capacity; for an older
broker, checked only once its acknowledgement is written), a writer (results out, with any
acknowledgements waiting in the same message, heartbeats when idle) and what the runner wants
done while the stream is up (``while_up``: the directories' lockout thresholds,
:mod:`agent.lockout`) until the stream ends; then wait a jittered, growing delay and dial again.
A drained link (its identity was renewed, its broker left the cluster, or the agent stops) tells
the broker, answers what it was sent, and ends when the broker closes the stream. What a broker
says of its cluster (the welcome's brokers, a ``Brokers`` message) goes to ``on_brokers``:
:mod:`agent.mesh` keeps a link to each broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import structlog

from agent.capacity import Capacity
from pta import __version__, rpc, tls
from pta.rpc import StreamEnded
from pta.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from agent.identity import AgentIdentity
    from agent.validation import Validator

log = structlog.get_logger()

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: A session that lasted this long was healthy: the next failure starts the backoff afresh.
HEALTHY_SESSION = 10.0
WELCOME_TIMEOUT = 10.0
DEFAULT_HEARTBEAT = 5.0


@dataclass(slots=True)
class _Control:
    """A message other than results or acknowledgements (draining)."""

    message: agent_pb2.AgentMessage


@dataclass(slots=True)
class _Ack:
    """A batch to acknowledge; ``written`` is set once the acknowledgement is on the stream."""

    request_ids: list[str]
    written: asyncio.Event = field(default_factory=asyncio.Event)


Outgoing = list[agent_pb2.ValidationResult] | _Control | _Ack


def _rpc_error(error: BaseException) -> grpc.aio.AioRpcError | None:
    """The gRPC error behind a failed session, also from inside a task group's group."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _rpc_error(inner)) is not None:
                return found
    return None


#: What runs while a stream is up: given the welcomed domains and a way to queue a message.
Send: TypeAlias = "Callable[[agent_pb2.AgentMessage], None]"
WhileUp: TypeAlias = "Callable[[tuple[str, ...], Send], Coroutine[Any, Any, None]]"
#: Told the cluster's brokers (agent endpoints) whenever a broker names them.
OnBrokers: TypeAlias = "Callable[[tuple[str, ...]], None]"


class Link:
    """Keeps one identity's Connect stream up and feeds its requests to its validator."""

    def __init__(  # noqa: PLR0913 - what one link needs, by name
        self,
        identity: AgentIdentity,
        validator: Validator,
        *,
        domains: tuple[str, ...],
        max_in_flight: int,
        while_up: WhileUp | None = None,
        directories: Sequence[agent_pb2.DirectoryAccounts] = (),
        endpoint: str = "",
        capacity: Capacity | None = None,
        on_brokers: OnBrokers | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """Prepare the link; nothing is dialled until :meth:`run`.

        Args:
            identity: The enrolled identity (certificate, keys, endpoints).
            validator: Answers each validation request.
            domains: The domains to offer in hello; empty means all of the tenant's.
            max_in_flight: How many requests the broker may send at once.
            while_up: Run beside the reader and writer for as long as each stream is up, with
                the domains the broker welcomed and a way to queue a message (None: nothing).
            directories: How each directory maps typed names to accounts (see the hello).
            endpoint: The broker's agent endpoint (default: the identity's, enrolled with).
            capacity: Checks at once, shared with the agent's other links (default: its own,
                of ``max_in_flight``).
            on_brokers: Told the cluster's brokers each time this link's broker names them.
            on_change: Called when the stream comes up (welcomed) and when it goes down.
        """
        self.identity = identity
        self.endpoint = endpoint or identity.agent_endpoint
        self._capacity = capacity or Capacity(max_in_flight)
        self._on_brokers = on_brokers
        self._on_change = on_change
        self._validator = validator
        self._while_up = while_up
        self._domains = domains
        self._directories = list(directories)
        self._max_in_flight = max_in_flight
        self.connected = asyncio.Event()
        self._draining = asyncio.Event()
        self._outbox: asyncio.Queue[Outgoing] | None = None
        #: Batches acknowledged whose results are not in the outbox yet.
        self._checking = 0
        self.serial = tls.serial_hex(tls.load_cert(identity.cert_pem))

    def drain(self, reason: str) -> None:
        """Ask for no new work on this link; it ends once the broker closes its stream."""
        self._draining.set()
        if self._outbox is not None and self.connected.is_set():
            self._outbox.put_nowait(
                _Control(agent_pb2.AgentMessage(draining=agent_pb2.Draining(reason=reason)))
            )

    async def run(self) -> None:
        """Connect and reconnect until drained or cancelled."""
        delay = BACKOFF_INITIAL
        bound = log.bind(serial=self.serial, broker=self.endpoint)
        while not self._draining.is_set():
            started = time.monotonic()
            try:
                await self._session()
                bound.info("link.closed_by_broker")
            except Exception as error:  # noqa: BLE001 - whatever broke the stream, dial again
                rpc_error = _rpc_error(error)
                if rpc_error is None:
                    bound.exception("link.crashed")
                else:
                    bound.warning(
                        "link.failed",
                        status=rpc_error.code().name,
                        details=rpc_error.details() or "",
                    )
            finally:
                was_up = self.connected.is_set()
                self.connected.clear()
                self._outbox = None
                if was_up and self._on_change is not None:
                    self._on_change()
            if self._draining.is_set():
                break
            if time.monotonic() - started > HEALTHY_SESSION:
                delay = BACKOFF_INITIAL
            pause = random.uniform(0, delay)  # noqa: S311 - jitter, not crypto
            bound.info("link.reconnecting", in_seconds=round(pause, 2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._draining.wait()
            delay = min(delay * 2, BACKOFF_MAX)
        bound.info("link.drained")

    async def _session(self) -> None:
        identity = self.identity
        credentials = tls.channel_credentials(
            identity.ca_pem, identity.tls_key_pem, identity.cert_pem
        )
        async with grpc.aio.secure_channel(
            self.endpoint, credentials, options=rpc.CHANNEL_OPTIONS
        ) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            await call.write(
                agent_pb2.AgentMessage(
                    hello=agent_pb2.Hello(
                        agent_id=identity.agent_id,
                        version=__version__,
                        domains=list(self._domains),
                        max_in_flight=self._max_in_flight,
                        directories=self._directories,
                    )
                )
            )
            async with asyncio.timeout(WELCOME_TIMEOUT):
                first = await call.read()
            if not isinstance(first, agent_pb2.BrokerMessage) or not first.HasField("welcome"):
                await call.done_writing()
                return
            welcome = first.welcome
            heartbeat = welcome.heartbeat_interval_ms / 1000 or DEFAULT_HEARTBEAT
            log.info(
                "link.connected",
                tenant=welcome.tenant,
                domains=list(welcome.domains),
                serial=self.serial,
                broker=self.endpoint,
                brokers=list(welcome.brokers),
            )
            outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
            self._outbox = outbox
            self.connected.set()
            self._told(welcome.brokers)
            if self._on_change is not None:
                self._on_change()
            if self._draining.is_set():  # Drained while dialling: say so at once.
                self.drain("stopping")
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(
                        self._read(call, group, outbox, acks=not welcome.lost_requests_counted)
                    )
                    group.create_task(
                        self._write(
                            call, outbox, heartbeat, acks_in_results=welcome.acks_in_results
                        )
                    )
                    if self._while_up is not None:
                        # Runs beside the reader: whatever it waits for delays no sign-in.
                        group.create_task(
                            self._while_up(
                                tuple(welcome.domains),
                                lambda message: outbox.put_nowait(_Control(message)),
                            )
                        )
            except* StreamEnded:
                pass
            finally:
                call.cancel()

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.BrokerMessage],
        group: asyncio.TaskGroup,
        outbox: asyncio.Queue[Outgoing],
        *,
        acks: bool,
    ) -> None:
        """Take validation batches off the stream, each checked in a task of its own.

        With ``acks`` (a broker that does not count lost requests itself), each batch is
        acknowledged and checked only once that is written; otherwise at once.
        """
        while True:
            message = await call.read()
            if not isinstance(message, agent_pb2.BrokerMessage):  # grpc.aio.EOF
                raise StreamEnded
            kind = message.WhichOneof("kind")
            if kind == "validations":
                requests = list(message.validations.requests)
                written: asyncio.Event | None = None
                if acks:
                    # Check nothing before the acknowledgement is on the stream: such a broker
                    # re-sends freely what was never acknowledged.
                    ack = _Ack([r.request_id for r in requests])
                    outbox.put_nowait(ack)
                    written = ack.written
                group.create_task(self._answer(requests, outbox, written))
            elif kind == "brokers":
                self._told(message.brokers.agent_endpoints)
            elif kind == "drain":
                log.info("link.drain_requested", reason=message.drain.reason)

    async def _answer(
        self,
        requests: list[agent_pb2.ValidationRequest],
        outbox: asyncio.Queue[Outgoing],
        acknowledged: asyncio.Event | None,
    ) -> None:
        """Open one batch (while its acknowledgement, if any, is written); then check it."""
        opened = self._validator.open_batch(requests)  # Tries no password: needs no ack.
        if acknowledged is not None:
            try:
                await acknowledged.wait()
            except asyncio.CancelledError:
                self._validator.forget(opened)  # Never acknowledged: it may come back.
                raise
        self._checking += 1
        try:
            async with self._capacity.hold(len(requests)):
                results = await self._validator.check_batch(opened)
        finally:
            self._checking -= 1
        outbox.put_nowait(results)

    def _told(self, brokers: Sequence[str]) -> None:
        """Pass on what the broker said of its cluster; an empty list says nothing."""
        if brokers and self._on_brokers is not None:
            self._on_brokers(tuple(brokers))

    async def _write(
        self,
        call: grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.BrokerMessage],
        outbox: asyncio.Queue[Outgoing],
        heartbeat: float,
        *,
        acks_in_results: bool,
    ) -> None:
        """Write what is waiting, in as few messages as the broker understands.

        Acknowledgements waiting together go in one list; with results waiting too, and a
        broker that reads ``Results.acks``, in the results' message. Either way a batch is
        checked only once the write carrying its acknowledgement has returned.
        """
        while True:
            # More results on their way (batches being checked): let them join this message.
            batch = await rpc.next_batch(outbox, heartbeat, lambda: self._checking > 0)
            if batch is None:
                beat = agent_pb2.Heartbeat(sent_unix_ms=int(time.time() * 1000))
                await call.write(agent_pb2.AgentMessage(heartbeat=beat))
                continue
            results: list[agent_pb2.ValidationResult] = []
            acks: list[_Ack] = []
            controls: list[_Control] = []
            for item in batch:
                if isinstance(item, _Ack):
                    acks.append(item)
                elif isinstance(item, _Control):
                    controls.append(item)
                else:
                    results.extend(item)
            for control in controls:
                await call.write(control.message)
            acked = [request_id for ack in acks for request_id in ack.request_ids]
            if acked and not (results and acks_in_results):
                await call.write(agent_pb2.AgentMessage(acks=agent_pb2.Acks(request_ids=acked)))
                acked = []
                _written(acks)  # Checks may start while the results are written.
            if results:
                await call.write(
                    agent_pb2.AgentMessage(results=agent_pb2.Results(results=results, acks=acked))
                )
            _written(acks)


def _written(acks: list[_Ack]) -> None:
    for ack in acks:
        ack.written.set()
