"""The broker process: two gRPC servers over one dispatcher, started and stopped together.

The public endpoint (server-authenticated TLS) takes sign-ins and enrolments; the agent
endpoint requires a client certificate from the broker's CA in the TLS handshake itself, so an
unauthenticated flood never reaches a handler. grpcio cannot ask for a client certificate
without requiring it, which is why they are two endpoints rather than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import json
from typing import TYPE_CHECKING, Any, Self

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from broker import assembly, cluster, maintenance, ownership
from broker.admin import Administration
from broker.api import admin as admin_api
from broker.api.agents import AgentService
from broker.api.signin import SignInService
from broker.dispatch.dispatcher import Dispatcher
from broker.metrics import OFF, BrokerMetrics
from broker.policy.ratelimit import RateLimiter
from broker.server_certificates import ServerCertificates
from broker.store import open_store
from broker.trust.ca import CertificateAuthority
from pta import __version__, rpc, tls
from pta.config import parse_endpoint
from pta.errors import StoreUnavailable
from pta.v1 import agent_pb2, signin_pb2

if TYPE_CHECKING:
    from types import SimpleNamespace, TracebackType
    from typing import IO

    from google.protobuf.descriptor import ServiceDescriptor

    from broker.cluster import Membership
    from broker.config import BrokerConfig
    from broker.metrics import Counts
    from broker.policy.signin_policy import SignInPolicy
    from broker.store.protocols import Store

log = structlog.get_logger()
ENDPOINTS_FILE = "endpoints.json"
#: How long agent streams get to close once the public endpoint has drained.
AGENT_STREAM_GRACE = 2.0
SERVICES = (
    signin_pb2.DESCRIPTOR.services_by_name["SignInService"],
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    admin_api.SERVICE,
)


class State(enum.Enum):
    """Where the broker is in its life; a broker is started once."""

    NEW = "new"
    SERVING = "serving"
    STOPPED = "stopped"


class Broker:
    """An async context manager that serves until it is left."""

    def __init__(self, config: BrokerConfig) -> None:
        """Prepare, without touching disk or network yet."""
        self.config = config
        self.state = State.NEW
        self.public_port = 0
        self.agent_port = 0
        self._servers: list[grpc.aio.Server] = []
        self._health: list[health_aio.HealthServicer] = []
        self._store: Store | None = None
        self._maintenance: asyncio.Task[None] | None = None
        #: With a shared store: this broker's heartbeat, and the brokers its agents are told.
        self._membership: Membership | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._dispatcher: Dispatcher | None = None
        self._signin: SignInService | None = None
        self._lock: IO[str] | None = None
        #: This broker's name in a store several share (its data dir's, see ownership).
        self.broker_id = ""
        #: ``--metrics-listen``: the metrics, the port they are served on, the tenants known.
        self._metrics: BrokerMetrics | None = None
        self.metrics_port = 0
        self._tenants: tuple[str, ...] = ()
        self._admin: admin_api.AdminService | None = None
        #: Store handles of its own to close at the end besides the store.
        self._closing: list[Store] = []

    async def __aenter__(self) -> Self:
        """Start serving."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving, letting in-flight sign-ins finish within the grace period."""
        await self.stop()

    async def start(self) -> None:
        """Load or create the CA, certificates and store; bind both endpoints; serve.

        Raises:
            RuntimeError: When started twice.
            CannotStart: When another broker serves the data dir, an address is taken, or its
                CA is not the one the store's cluster claimed.
            StoreUnavailable: When the store (PostgreSQL) cannot be reached.
            StoreTooNew: When the store's schema is newer than this broker knows.
        """
        if self.state is not State.NEW:
            raise RuntimeError("a broker is started once")
        config = self.config
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = ownership.lock_data_dir(config.data_dir)
        self.broker_id = ownership.broker_id(config.data_dir)
        try:
            await self._start(config)
        except BaseException:
            self._lock.close()
            if self._metrics is not None:
                self._metrics.close()
            if self._store is not None:
                self._store.close()
            raise

    async def _start(self, config: BrokerConfig) -> None:
        if not config.reuse_port:
            ownership.check_free(config.listen, flag="--listen")
            ownership.check_free(config.agent_listen, flag="--agent-listen")
        store = self._store = open_store(config.data_dir, url=config.store)
        ca = CertificateAuthority.load_or_create(config.data_dir)
        if config.store:  # A cluster's store: one CA for all its brokers.
            assembly.claim_ca(store, ca, config)
        self.certificates = ServerCertificates(
            ca, config.data_dir, config.san, config.server_cert_lifetime
        )
        dispatcher = self._dispatcher = Dispatcher(queue_limit=config.queue_limit)
        policy = assembly.sign_in_policy(config, store, ca)
        metrics = self._serve_metrics(store, config, policy)

        # grpc shares a port by default (SO_REUSEPORT): only when asked for here.
        reuse = [("grpc.so_reuseport", int(config.reuse_port))]
        public = self._server(SERVICES[:2], [*rpc.PUBLIC_SERVER_OPTIONS, *reuse])
        agents = self._server(SERVICES[1:], [*rpc.SERVER_OPTIONS, *reuse])
        try:
            self.public_port = public.add_secure_port(
                config.listen, self.certificates.credentials()
            )
            self.agent_port = agents.add_secure_port(
                config.agent_listen, self.certificates.credentials(client_ca=ca.cert_pem)
            )
        except RuntimeError:  # Taken between the check and now.
            self.public_port = self.agent_port = 0
        if not self.public_port or not self.agent_port:
            raise ownership.CannotStart(
                f"cannot listen on {config.listen} and {config.agent_listen}: in use, or not "
                "an address of this machine"
            )
        self._membership = cluster.membership(
            store, config, self.broker_id, public_port=self.public_port, agent_port=self.agent_port
        )
        signin = self._signin = SignInService(
            store=store,
            dispatcher=dispatcher,
            policy=policy,
            timeout=config.signin_timeout,
            limiter=RateLimiter(config.rate_limit, config.rate_burst or None),
            trusted_proxies=tuple(ipaddress.ip_network(p) for p in config.trusted_proxies),
            stream_idle=config.stream_idle_timeout,
            streams_per_address=config.streams_per_address,
            metrics=metrics,
        )
        agent_service = AgentService(
            store=store,
            ca=ca,
            dispatcher=dispatcher,
            cert_lifetime=config.agent_cert_lifetime,
            heartbeat_interval=config.heartbeat_interval,
            agent_endpoint=config.agent_endpoint,
            agent_port=self.agent_port,
            on_directory_report=policy.directory_reported,
            on_accounts=policy.agent_configured,
            brokers=self._brokers,
        )
        rpc.add_service(public, SERVICES[0], signin)
        for server in (public, agents):
            rpc.add_service(server, SERVICES[1], agent_service)
        # Only where the handshake requires a client certificate of the CA.
        rpc.add_service(agents, SERVICES[2], self._admin_service(store, ca, policy))
        for server in self._servers:
            await server.start()
        for health in self._health:
            for service in ("", *(s.full_name for s in SERVICES)):  # Unserved names: unknown.
                await health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.state = State.SERVING
        self._maintenance = asyncio.create_task(
            maintenance.maintain(
                store,
                dispatcher,
                policy,
                broker_id=self.broker_id,
                store_shown=config.store_shown,
                every_second=lambda: self._refresh_metrics(store, dispatcher),
            )
        )
        self._join_cluster(dispatcher)
        endpoints = self._endpoints(config)
        tls.write_public(config.data_dir / ENDPOINTS_FILE, json.dumps(endpoints).encode())
        log.info(
            "broker.serving",
            **endpoints,
            ca_sha256=ca.fingerprint,
            broker_id=self.broker_id,
            store=config.store_shown,
        )

    def _endpoints(self, config: BrokerConfig) -> dict[str, str]:
        """Where it serves, as ``endpoints.json`` says to the tools that start it."""
        host = config.listen.rpartition(":")[0]
        agent_host = config.agent_listen.rpartition(":")[0]
        endpoints = {
            "public": f"{host}:{self.public_port}",
            "agent": f"{agent_host}:{self.agent_port}",
            "ca_file": str(config.data_dir / "ca.pem"),
        }
        if self.metrics_port:
            endpoints["metrics"] = f"{config.metrics_listen.rpartition(':')[0]}:{self.metrics_port}"
        return endpoints

    def _serve_metrics(self, store: Store, config: BrokerConfig, policy: SignInPolicy) -> Counts:
        """Start serving ``/metrics`` when asked to (``--metrics-listen``); the policy counts.

        Returns:
            What the sign-in path counts with (:data:`~broker.metrics.OFF` when not asked).

        Raises:
            CannotStart: When its address cannot be bound.
        """
        if not config.metrics_listen:
            return OFF
        host, port = parse_endpoint(config.metrics_listen)
        metrics = self._metrics = BrokerMetrics(version=__version__, store_failures=store.failures)
        try:
            self.metrics_port = metrics.serve(host, port)
        except OSError as error:
            raise ownership.CannotStart(
                f"cannot serve metrics on {config.metrics_listen} (--metrics-listen):"
                f" {error.strerror or error}"
            ) from None
        policy.gate.metrics = policy.mfa.metrics = metrics
        return metrics

    def _admin_service(
        self, store: Store, ca: CertificateAuthority, policy: SignInPolicy
    ) -> SimpleNamespace:
        """The AdminService over the store, on a store handle of its own when it is SQLite.

        A SQLite connection must not carry the event loop's transactions and the admin
        worker's at once; a second connection is what the CLI would open anyway.
        """
        admin_store = store if store.shared else open_store(self.config.data_dir)
        if admin_store is not store:
            self._closing.append(admin_store)
        self._admin = admin_api.AdminService(
            Administration(
                store=admin_store,
                ca_fingerprint=lambda: ca.fingerprint,
                mfa_key=lambda: policy.mfa.key,
                no_mfa_key=(
                    "this broker has no MFA key: restart it with --mfa-key-file (make one with"
                    " `pta-broker mfa keygen FILE` and give every broker of a cluster the same)"
                ),
            )
        )
        return self._admin.servicer()

    def _refresh_metrics(self, store: Store, dispatcher: Dispatcher) -> None:
        """What the metrics say is (agents, queues, certificates), as of now."""
        if self._metrics is None:
            return
        with contextlib.suppress(StoreUnavailable):  # The tenants known stand meanwhile.
            self._tenants = tuple(store.tenants())
        self._metrics.refresh(self._tenants, dispatcher.connections(), dispatcher.queued)

    def _brokers(self) -> tuple[str, ...]:
        """What a Welcome says of the cluster: its brokers' agent endpoints (alone: none)."""
        return () if self._membership is None else self._membership.endpoints

    def _join_cluster(self, dispatcher: Dispatcher) -> None:
        """Register once serving (agents told of it can attach), then heartbeat every second."""
        if self._membership is None:
            return
        self._membership.join()
        announce = cluster.announcer(dispatcher)
        announce(self._membership.endpoints)  # To any agent welcomed before the set was read.
        self._heartbeat = asyncio.create_task(self._membership.run(announce))

    async def _stop_background(self) -> None:
        """Stop the maintenance and the heartbeat, and deregister from the cluster.

        Deregistered first thing: at their next tick the other brokers tell its agents to drop
        their streams here; each still answers what it was sent before it ends.
        """
        for task in (self._maintenance, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._membership is not None:
            self._membership.leave()

    def _server(
        self, services: tuple[ServiceDescriptor, ...], options: list[tuple[str, Any]]
    ) -> grpc.aio.Server:
        server = grpc.aio.server(options=options)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        names = (
            *(s.full_name for s in services),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        self._servers.append(server)
        self._health.append(health)
        return server

    def _close_handles(self) -> None:
        """Say the streams are gone, then close the store, the metrics, the data dir's lock."""
        if self._admin is not None:
            self._admin.close()
        for handle in self._closing:
            handle.close()
        if self._store is not None:
            try:
                self._store.agents.report_connections(self.broker_id, [])
                self._store.report_status(self.broker_id, {})
            except StoreUnavailable as error:  # Its reports go stale by themselves.
                log.warning("broker.store_unavailable", reason=error.detail)
            self._store.close()
        if self._metrics is not None:
            self._metrics.close()
        if self._lock is not None:
            self._lock.close()  # Another broker may serve the data dir from now on.

    async def stop(self) -> None:
        """Stop taking sign-ins, answer those in flight, then end the agents' streams.

        In-flight sign-ins get ``grace`` seconds; idempotent. The agent endpoint stays up
        until the public one has drained: the sign-ins still in flight need their agents.
        """
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        await self._stop_background()
        for health in self._health:
            await health.enter_graceful_shutdown()
        public, agents = self._servers
        if self._signin is not None:
            self._signin.close_streams()  # Each answers what it has read, then ends.
        await public.stop(self.config.grace)
        if self._dispatcher is not None:
            for conn in self._dispatcher.connections():
                conn.ended.set()  # Each stream ends cleanly; its agent dials again later.
        await agents.stop(AGENT_STREAM_GRACE)
        self._close_handles()
        log.info("broker.stopped")
