"""Serving a Prometheus registry at ``/metrics`` (``--metrics-listen``), broker and agent alike.

With ``prometheus-client``'s own HTTP server, in a thread of its own: a scrape never waits for
the event loop, and the event loop never waits for a scrape. It serves what the registry holds
and nothing else (no default collectors but those the registry was given).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry


class MetricsHttp:
    """One registry's ``/metrics`` endpoint: started by :meth:`serve`, ended by :meth:`close`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Serve ``registry`` (nothing listens before :meth:`serve`)."""
        self._registry = registry
        self._server: WSGIServer | None = None

    def serve(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); the port bound.

        Raises:
            OSError: When the address cannot be bound (taken, or not this machine's).
        """
        self._server, _ = start_http_server(port, addr=host, registry=self._registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
