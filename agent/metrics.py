"""The agent's Prometheus metrics (``pta-agent run --metrics-listen HOST:PORT``, off by default).

What an operator of the on-premises side graphs and alerts on (``docs/metrics.md``,
``docs/alerts.yml``): the checks answered by outcome, the time of every request to each
directory server by operation, whether each server answers, whether each broker's stream is
up, and the certificate's dates. With the official ``prometheus-client`` and a registry of the
agent's own, like the broker's (:mod:`broker.metrics`).

Counted where it happens (the validator, the LDAP pools, both on the event loop); the links'
state is a snapshot taken once a second (:meth:`AgentMetrics.refresh`), so a scrape, served
from a thread of its own, never reads the event loop's objects. Labels: outcome names (an
enum), server URLs as configured (scheme, host and port only), the brokers' agent endpoints,
and fixed operation words: bounded, and never a user, a DN, a password or a token.

When metrics are off, :data:`OFF` stands in: the same methods, doing nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pta import __version__
from pta.metrics_http import MetricsHttp

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: A local bind is a fraction of a millisecond; the pools give up after seconds.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@functools.lru_cache(maxsize=64)
def server_label(url: str) -> str:
    """A directory server as a label: scheme, host and port of its URL (nothing else)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class Counts(Protocol):
    """What the agent's code paths count: :class:`AgentMetrics`, or :data:`OFF`."""

    def validated(self, outcome: str) -> None:
        """Count one check answered."""

    def directory_request(self, url: str, operation: str, seconds: float) -> None:
        """Time one request to a directory server (its URL as configured)."""

    def server_up(self, url: str, *, up: bool, reason: str = "") -> None:
        """Say whether a directory server answered its last connection or request (or why not)."""


class AgentMetrics:
    """The agent's registry and its metrics; :meth:`serve` publishes them."""

    def __init__(self, servers: Iterable[str]) -> None:
        """Create the metrics; every configured server (URL) starts as up."""
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self._validations = Counter(
            "pta_agent_validations",
            "Checks answered, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self._duration = Histogram(
            "pta_directory_request_duration_seconds",
            "Time of each request to a directory server, by operation (bind, search).",
            ["server", "operation"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._up = Gauge(
            "pta_directory_server_up",
            "1 when the server answered its last connection or request, 0 when it did not.",
            ["server"],
            registry=registry,
        )
        self._brokers = Gauge(
            "pta_agent_broker_connected",
            "1 while the stream to the broker is up (one series per broker of the cluster).",
            ["broker"],
            registry=registry,
        )
        self._expiry = Gauge(
            "pta_agent_certificate_expiry_timestamp_seconds",
            "When the agent's certificate expires (Unix time).",
            registry=registry,
        )
        self._issued = Gauge(
            "pta_agent_certificate_issued_timestamp_seconds",
            "When the agent's certificate was issued (Unix time).",
            registry=registry,
        )
        Gauge("pta_agent_info", "This agent's version.", ["version"], registry=registry).labels(
            __version__
        ).set(1)
        for url in servers:
            self._up.labels(server_label(url)).set(1)
        self._shown: set[str] = set()
        self._http = MetricsHttp(registry)

    def validated(self, outcome: str) -> None:
        """Count one check answered."""
        self._validations.labels(outcome).inc()

    def directory_request(self, url: str, operation: str, seconds: float) -> None:
        """Time one request to a directory server."""
        self._duration.labels(server_label(url), operation).observe(seconds)

    def server_up(self, url: str, *, up: bool, reason: str = "") -> None:
        """Say whether a directory server answered (the reason is for the health report)."""
        del reason
        self._up.labels(server_label(url)).set(1 if up else 0)

    def certificate(self, issued: float, expires: float) -> None:
        """The current certificate's dates (at start and after each renewal)."""
        self._issued.set(issued)
        self._expiry.set(expires)

    def refresh(self, links: Mapping[str, bool]) -> None:
        """Each broker's stream up or not; a broker no longer linked loses its series."""
        for broker in self._shown - links.keys():
            self._brokers.remove(broker)
        for broker, up in links.items():
            self._brokers.labels(broker).set(1 if up else 0)
        self._shown = set(links)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` from a thread of its own; the port bound."""
        return self._http.serve(host, port)

    def close(self) -> None:
        """Stop serving."""
        self._http.close()


class _Off:
    """Metrics off: every counting method, doing nothing."""

    def validated(self, outcome: str) -> None:
        """Nothing."""

    def directory_request(self, url: str, operation: str, seconds: float) -> None:
        """Nothing."""

    def server_up(self, url: str, *, up: bool, reason: str = "") -> None:
        """Nothing."""


#: What counts when nothing is counted.
OFF: Counts = _Off()
