"""The broker's Prometheus metrics (``--metrics-listen HOST:PORT``, off by default).

What operators graph and alert on (``docs/metrics.md``, ``docs/alerts.yml``): sign-ins by
tenant, outcome and API, their duration, lockouts, MFA results, queues, connected agents and
their certificates, store errors. With the official ``prometheus-client`` and a registry of
the broker's own (not the library's global one), so two brokers in one process (the tests)
never mix their counts.

Two kinds of value, two ways:

- what happens (a sign-in answered, a lockout, an MFA code checked) is counted where it
  happens, on the event loop: a counter's increment is a lock and an addition;
- what *is* (queue depths, streams, certificates) is a snapshot the broker's maintenance
  refreshes every second (:meth:`BrokerMetrics.refresh`) and a scrape reads. The HTTP server
  runs in a thread of its own, and the dispatcher and an SQLite store belong to the event
  loop's thread: a scrape never touches them.

No label carries a user name, a password, an address or a token. Label values are bounded:
tenant names and agent ids are the store's, outcomes and statuses are enum names (an outcome
this broker does not know is ``UNKNOWN``), locations and APIs are fixed words. A sign-in refused
before its domain named a tenant is counted under ``tenant=""``.

When metrics are off, :data:`OFF` stands in: the same methods, doing nothing, so the sign-in
path has no branch of its own and pays one call.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pta.metrics_http import MetricsHttp
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from prometheus_client import Metric

    from broker.dispatch.jobs import Connection

#: Sign-in durations: a local bind is a millisecond, a deadline ten seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: The APIs a sign-in comes through.
APIS = ("signin", "signin_stream", "password_change")


def outcome_label(value: int) -> str:
    """An answer's enum name; ``UNKNOWN`` for a value this broker does not know (bounded)."""
    try:
        return outcome_pb2.Outcome.Name(value)
    except ValueError:
        return "UNKNOWN"


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What is, as of the last refresh: replaced whole, never changed (a scrape reads it)."""

    #: Every tenant of the store, so a tenant with no agent shows 0, not nothing.
    tenants: tuple[str, ...] = ()
    queued: tuple[tuple[str, int], ...] = ()
    #: tenant -> (distinct agents, streams).
    agents: tuple[tuple[str, int, int], ...] = ()
    #: agent id -> (issued at, not after) of its newest live stream's certificate.
    certificates: tuple[tuple[str, float, float], ...] = ()


class _Collector(Collector):
    """The snapshot's gauges, and the store's failures, read at scrape time."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self._metrics.snapshot
        queue = GaugeMetricFamily(
            "pta_tenant_queue_depth", "Sign-ins waiting for an agent.", labels=["tenant"]
        )
        connected = GaugeMetricFamily(
            "pta_agents_connected", "Agents with a live stream here.", labels=["tenant"]
        )
        streams = GaugeMetricFamily("pta_agent_streams", "Live agent streams.", labels=["tenant"])
        queued = dict(snap.queued)
        agents = {tenant: (n, s) for tenant, n, s in snap.agents}
        for tenant in sorted(set(snap.tenants) | set(queued) | set(agents)):
            queue.add_metric([tenant], queued.get(tenant, 0))
            count, held = agents.get(tenant, (0, 0))
            connected.add_metric([tenant], count)
            streams.add_metric([tenant], held)
        expiry = GaugeMetricFamily(
            "pta_agent_certificate_expiry_timestamp_seconds",
            "When the certificate of the agent's newest stream expires (Unix time).",
            labels=["agent"],
        )
        issued = GaugeMetricFamily(
            "pta_agent_certificate_issued_timestamp_seconds",
            "When the certificate of the agent's newest stream was issued (Unix time).",
            labels=["agent"],
        )
        for agent, issued_at, not_after in snap.certificates:
            expiry.add_metric([agent], not_after)
            issued.add_metric([agent], issued_at)
        errors = CounterMetricFamily(
            "pta_store_errors", "Store calls that failed for want of the store."
        )
        errors.add_metric([], self._metrics.store_failures())
        yield from (queue, connected, streams, expiry, issued, errors)


class BrokerMetrics:
    """The broker's registry and its metrics; :meth:`serve` publishes them."""

    def __init__(self, *, version: str, store_failures: Callable[[], int]) -> None:
        """Create the metrics; ``store_failures`` says how many store calls failed so far."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.store_failures = store_failures
        self.snapshot = Snapshot()
        registry = self.registry
        self._signins = Counter(
            "pta_signins",
            "Sign-ins answered, by outcome (an answer's name, or the error status's).",
            ["tenant", "outcome", "api"],
            registry=registry,
        )
        self._duration = Histogram(
            "pta_signin_duration_seconds",
            "Time from a sign-in's arrival to its answer.",
            ["api"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "pta_signins_in_flight", "Sign-ins being answered now.", registry=registry
        )
        self._lockouts = Counter(
            "pta_lockouts",
            "Accounts locked by the broker's smart lockout, by kind of location.",
            ["tenant", "location"],
            registry=registry,
        )
        self._mfa = Counter(
            "pta_mfa",
            "Second-factor codes checked, by result.",
            ["tenant", "result"],
            registry=registry,
        )
        info = Gauge("pta_broker_info", "This broker's version.", ["version"], registry=registry)
        info.labels(version).set(1)
        ProcessCollector(registry=registry)
        registry.register(_Collector(self))
        self._http = MetricsHttp(registry)

    def signin_started(self) -> None:
        """One more sign-in in flight."""
        self.in_flight.inc()

    def signin(self, api: str, tenant: str, outcome: str, seconds: float) -> None:
        """Count one sign-in answered (``outcome``: an answer or status name)."""
        self.in_flight.dec()
        self._signins.labels(tenant, outcome, api).inc()
        self._duration.labels(api).observe(seconds)

    def lockout(self, tenant: str, location: str) -> None:
        """Count an account locked."""
        self._lockouts.labels(tenant, location).inc()

    def mfa(self, tenant: str, result: str) -> None:
        """Count a second-factor code checked (``result``: its status name, OK when right)."""
        self._mfa.labels(tenant, result).inc()

    def refresh(
        self,
        tenants: Iterable[str],
        connections: Sequence[Connection],
        queued: Callable[[str], int],
    ) -> None:
        """Take a new snapshot of what is (on the event loop, where those live)."""
        by_tenant: dict[str, tuple[set[str], int]] = {}
        newest: dict[str, Connection] = {}
        for conn in connections:
            agents, streams = by_tenant.get(conn.tenant, (set(), 0))
            agents.add(conn.agent_id)
            by_tenant[conn.tenant] = (agents, streams + 1)
            if conn.agent_id not in newest or conn.not_after > newest[conn.agent_id].not_after:
                newest[conn.agent_id] = conn
        known = tuple(sorted(set(tenants) | set(by_tenant)))
        self.snapshot = Snapshot(
            tenants=known,
            queued=tuple((tenant, queued(tenant)) for tenant in known),
            agents=tuple((t, len(a), s) for t, (a, s) in sorted(by_tenant.items())),
            certificates=tuple(
                (agent, conn.issued_at, conn.not_after) for agent, conn in sorted(newest.items())
            ),
        )

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` from a thread of its own; the port bound."""
        return self._http.serve(host, port)

    def close(self) -> None:
        """Stop serving."""
        self._http.close()


class Counts(Protocol):
    """What the sign-in path counts: :class:`BrokerMetrics`, or :data:`OFF`."""

    def signin_started(self) -> None:
        """One more sign-in in flight."""

    def signin(self, api: str, tenant: str, outcome: str, seconds: float) -> None:
        """Count one sign-in answered."""

    def lockout(self, tenant: str, location: str) -> None:
        """Count an account locked."""

    def mfa(self, tenant: str, result: str) -> None:
        """Count a second-factor code checked."""


class _Off:
    """Metrics off: every method of :class:`BrokerMetrics` that counts, doing nothing."""

    def signin_started(self) -> None:
        """Nothing."""

    def signin(self, api: str, tenant: str, outcome: str, seconds: float) -> None:
        """Nothing."""

    def lockout(self, tenant: str, location: str) -> None:
        """Nothing."""

    def mfa(self, tenant: str, result: str) -> None:
        """Nothing."""


#: What counts when nothing is counted.
OFF: Counts = _Off()
