"""The running agent: its links to every broker, and the renewal that replaces them in time.

The links are a :class:`~agent.mesh.Mesh`: one per broker of the cluster, all of one identity,
their checks sharing one :class:`~agent.capacity.Capacity` (the agent's ``max_in_flight``) and
the directories' pools. The identity is renewed once, at any broker whose link is up, and every
link is replaced make-before-break: each broker's new link is connected first; only then is the
old one drained, and it still answers everything sealed to its key before its stream ends.
Nothing in flight is lost to a rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import itertools
import random
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog

from agent import lockout, renewal
from agent.capacity import Capacity
from agent.health import Health
from agent.health import keep_reporting as report_health
from agent.identity import AgentIdentity, load_brokers, save_brokers
from agent.link import Link
from agent.lockout import PolicyReporter
from agent.mesh import Mesh
from agent.metrics import OFF
from agent.validation import ReplayGuard, Validator
from pta import tls
from pta.v1 import agent_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from pathlib import Path

    from agent.directory import LdapDirectory
    from agent.metrics import AgentMetrics

log = structlog.get_logger()
_T = TypeVar("_T")
RETRY_INITIAL = 1.0
RETRY_MAX = 60.0
#: How often an agent whose certificate expired looks for a new enrolment in its state dir.
EXPIRED_RECHECK = 60.0
#: How often the metrics' snapshot of the links and the certificate is taken.
METRICS_INTERVAL = 1.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Agent:
    """Runs the agent's links to every broker, renewing its identity for as long as it runs."""

    def __init__(  # noqa: PLR0913 - wiring
        self,
        state_dir: Path,
        directory_for: Callable[[str], LdapDirectory | None],
        *,
        domains: tuple[str, ...],
        max_in_flight: int,
        directories: Sequence[agent_pb2.DirectoryAccounts] = (),
        metrics: AgentMetrics | None = None,
        health: Health | None = None,
    ) -> None:
        """Prepare; nothing happens until :meth:`run`.

        ``directories`` says in every hello how each directory maps names to accounts;
        ``metrics`` (``--metrics-listen``) counts checks and follows links and certificate;
        ``health`` (which counts into the metrics too) is reported on every stream.
        """
        self._metrics = metrics
        self._health = health or Health(metrics=OFF if metrics is None else metrics)
        self._state_dir = state_dir
        self._directory_for = directory_for
        self._domains = domains
        self._directories = tuple(directories)
        self._max_in_flight = max_in_flight
        self._replay = ReplayGuard()
        self._capacity = Capacity(max_in_flight)
        self._reporter = PolicyReporter(directory_for)
        self._stopping = asyncio.Event()
        self.mesh: Mesh | None = None

    def stop(self) -> None:
        """Drain: ask for no new work, answer what was sent, then let :meth:`run` return."""
        self._stopping.set()
        if self.mesh is not None:
            self.mesh.stop("agent stopping")

    def _link(self, identity: AgentIdentity, endpoint: str, mesh: Mesh) -> Link:
        validator = Validator(
            identity,
            self._directory_for,
            replay=self._replay,
            metrics=self._health,
        )
        return Link(
            identity,
            validator,
            domains=self._domains,
            max_in_flight=self._max_in_flight,
            while_up=self._while_up,
            directories=self._directories,
            endpoint=endpoint,
            capacity=self._capacity,
            on_brokers=mesh.told,
            on_change=mesh.changed,
        )

    async def _while_up(
        self, domains: tuple[str, ...], send: Callable[[agent_pb2.AgentMessage], None]
    ) -> None:
        """While a stream is up: its directories' lockout thresholds, and the agent's health.

        Each now and when it changes.
        """
        async with asyncio.TaskGroup() as group:
            group.create_task(report_health(self._health, send))
            await lockout.keep_reporting(
                self._reporter,
                domains,
                lambda report: send(agent_pb2.AgentMessage(directory_report=report)),
            )

    async def run(self) -> None:
        """Serve until stopped (then drained) or cancelled."""
        async with asyncio.TaskGroup() as group:
            watching = group.create_task(self._watch()) if self._metrics is not None else None
            await self._serve(group)
            if watching is not None:
                watching.cancel()

    async def _watch(self) -> None:
        """Once a second: the metrics' snapshot of the links and of the certificate."""
        if self._metrics is None:
            return
        while True:
            mesh = self.mesh
            if mesh is not None:
                links = mesh.links
                self._metrics.refresh({e: link.connected.is_set() for e, link in links.items()})
                cert = tls.load_cert(mesh.identity.cert_pem)
                self._metrics.certificate(
                    cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
                )
            await asyncio.sleep(METRICS_INTERVAL)

    async def _serve(self, group: asyncio.TaskGroup) -> None:
        """The identity's mesh, renewed and rotated, until stopped or expired for good."""
        while not self._stopping.is_set():
            identity = await self._unless_stopping(self._usable_identity())
            if identity is None:
                break
            mesh = self.mesh = Mesh(
                identity,
                self._link,
                group,
                known=load_brokers(self._state_dir),
                remember=functools.partial(save_brokers, self._state_dir),
            )
            mesh.start()
            while True:
                renewed = await self._unless_stopping(self._renewed(identity, mesh))
                if self._stopping.is_set():
                    mesh.stop("agent stopping")
                    break
                if renewed is None:  # Expired: wait for the operator to enrol again.
                    mesh.stop("certificate expired")
                    break
                renewed.save(self._state_dir)
                await mesh.rotate(renewed)
                log.info(
                    "agent.rotated",
                    old_serial=_serial(identity),
                    serial=_serial(renewed),
                    brokers=len(mesh.links),
                )
                identity = renewed

    async def _unless_stopping(self, work: Coroutine[Any, Any, _T]) -> _T | None:
        """Await ``work``, or give up on it (None) as soon as the agent is stopping."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stopping):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
        return task.result() if task.done() and not task.cancelled() else None

    async def _usable_identity(self) -> AgentIdentity:
        """Load the identity; while its certificate has expired, say what to do and wait."""
        while True:
            identity = AgentIdentity.load(self._state_dir)
            expiry = renewal.expires_at(identity)
            if expiry > _now():
                return identity
            log.error(
                "agent.certificate_expired",
                expired_at=expiry.isoformat(),
                action=(
                    "enrol again: pta-broker token create --tenant "
                    f"{identity.tenant}, then pta-agent enroll --broker {identity.broker} "
                    f"--token TOKEN --state-dir {self._state_dir}"
                ),
                recheck_in_seconds=EXPIRED_RECHECK,
            )
            await asyncio.sleep(EXPIRED_RECHECK)

    async def _renewed(self, identity: AgentIdentity, mesh: Mesh) -> AgentIdentity | None:
        """Renew when due, retrying with backoff; None once the certificate has expired.

        Once, at one broker: the first whose link is up; each retry at the next one.
        """
        await asyncio.sleep(max(0.0, (renewal.renew_at(identity) - _now()).total_seconds()))
        delay = RETRY_INITIAL
        for attempt in itertools.count():
            endpoints = mesh.endpoints() or [identity.agent_endpoint]
            endpoint = endpoints[attempt % len(endpoints)]
            try:
                return await renewal.renew(identity, endpoint)
            except grpc.aio.AioRpcError as error:
                left = renewal.life_left(identity, _now())
                report = log.warning if left < renewal.WARN_BELOW else log.info
                report(
                    "agent.renewal_failed",
                    status=error.code().name,
                    details=error.details() or "",
                    broker=endpoint,
                    life_left=round(left, 3),
                    expires_at=renewal.expires_at(identity).isoformat(),
                )
            remaining = (renewal.expires_at(identity) - _now()).total_seconds()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(random.uniform(delay / 2, delay), remaining))  # noqa: S311
            delay = min(delay * 2, RETRY_MAX)
        return None  # pragma: no cover - the loop above only returns


def _serial(identity: AgentIdentity) -> str:
    return tls.serial_hex(tls.load_cert(identity.cert_pem))
