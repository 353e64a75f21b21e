"""What the agent tells operators about itself: checks by kind, each directory server's state.

Counted where the metrics are counted (it wraps them: one call per event feeds both), and
kept for the :class:`~pta.v1.agent_pb2.Health` the agent sends on each stream, whether or not
Prometheus metrics are on. On a sign-in's path it costs an integer increment and, for a bind,
one append to a bounded deque; the median is taken only when a report is made.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from agent.metrics import OFF, server_label
from pta.v1 import agent_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from agent.metrics import Counts

log = structlog.get_logger()
#: Binds the median is taken over, per server.
BIND_WINDOW = 256
#: A last error is cut to this many characters.
MAX_ERROR = 200
#: How often a stream's report is refreshed (sent only when it changed).
HEALTH_INTERVAL = 5.0
#: Outcomes that say nothing about the user (see ``Outcome`` in outcome.proto).
ERRORS = frozenset({"DIRECTORY_UNAVAILABLE", "REQUEST_REJECTED", "OUTCOME_UNSPECIFIED"})


@dataclass(slots=True)
class _Server:
    binds: deque[float] = field(default_factory=lambda: deque(maxlen=BIND_WINDOW))
    count: int = 0
    reachable: bool = False
    last_error: str = ""
    last_error_at: float = 0.0


class Health:
    """Counts what :class:`~agent.metrics.Counts` counts, and passes it on to ``metrics``."""

    def __init__(
        self,
        servers: Iterable[str] = (),
        metrics: Counts = OFF,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Know the configured servers (reported before they are used); count into ``metrics``."""
        self._metrics = metrics
        self._clock = clock
        self.started_at = clock()
        self._outcomes = {"handled": 0, "succeeded": 0, "failed": 0, "errors": 0}
        self._servers: dict[str, _Server] = {server_label(url): _Server() for url in servers}

    def validated(self, outcome: str) -> None:
        """Count one check answered, by what its answer says of the user."""
        self._metrics.validated(outcome)
        self._outcomes["handled"] += 1
        kind = "succeeded" if outcome == "SUCCESS" else "errors" if outcome in ERRORS else "failed"
        self._outcomes[kind] += 1

    def directory_request(self, url: str, operation: str, seconds: float) -> None:
        """Time one request; a bind's time joins its server's window."""
        self._metrics.directory_request(url, operation, seconds)
        if operation == "bind":
            server = self._server(url)
            server.binds.append(seconds)
            server.count += 1

    def server_up(self, url: str, *, up: bool, reason: str = "") -> None:
        """A server answered, or failed (why, without a user's name: the pools say the kind)."""
        self._metrics.server_up(url, up=up, reason=reason)
        server = self._server(url)
        server.reachable = up
        if not up:
            server.last_error = (reason or "unreachable")[:MAX_ERROR]
            server.last_error_at = self._clock()

    def _server(self, url: str) -> _Server:
        label = server_label(url)
        found = self._servers.get(label)
        if found is None:
            found = self._servers[label] = _Server()
        return found

    def report(self) -> agent_pb2.Health:
        """The numbers as of now, for a stream."""
        return agent_pb2.Health(
            started_at=self.started_at,
            **self._outcomes,
            servers=[
                agent_pb2.ServerHealth(
                    server=label,
                    reachable=s.reachable,
                    last_error=s.last_error,
                    last_error_at=s.last_error_at,
                    median_bind_ms=statistics.median(s.binds) * 1000 if s.binds else 0.0,
                    binds=s.count,
                )
                for label, s in sorted(self._servers.items())
            ],
        )


async def keep_reporting(
    health: Health,
    send: Callable[[agent_pb2.AgentMessage], None],
    *,
    interval: float = HEALTH_INTERVAL,
) -> None:
    """Send the report at once, then every ``interval`` when it changed, until cancelled.

    Shares a task group with the stream's reader and writer: nothing here may end the stream.
    """
    last: agent_pb2.Health | None = None
    while True:
        try:
            report = health.report()
            if report != last:
                send(agent_pb2.AgentMessage(health=report))
                last = report
        except Exception:  # A report must never cost the stream.
            log.exception("agent.health_report_failed")
        await asyncio.sleep(interval)
