"""A throwaway Prometheus server, and promtool, for the metrics tests.

The metrics are for Prometheus, so the tests hand them to a real one: Debian's ``prometheus``
package, twin of :class:`tooling.slapd.Slapd` and :class:`tooling.postgres.Postgres`. Each
:class:`Prometheus` is private: its own config and storage in a temp dir, a free port on
127.0.0.1 only, a process group (:class:`tooling.daemon.Daemon`) stopped whole on exit, and
"ready" meaning it answered ``/-/ready``. It scrapes the targets it is given every second, so a
test can ask its HTTP API what it saw within seconds.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tooling.daemon import Daemon
from tooling.slapd import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "INSTALL_COMMAND",
    "Prometheus",
    "check_metrics",
    "prometheus_missing_reason",
    "promtool",
]

INSTALL_COMMAND = "apt-get install --no-install-recommends prometheus"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
HTTP_TIMEOUT = 5.0


def prometheus_missing_reason() -> str | None:
    """Why no :class:`Prometheus` (or promtool) can run here (a pytest skip reason), or None."""
    missing = [name for name in ("prometheus", "promtool") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: {INSTALL_COMMAND} (make test does it)"
    return None


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool; the caller checks the outcome."""
    binary = shutil.which("promtool")
    if binary is None:
        raise RuntimeError(prometheus_missing_reason())
    return subprocess.run(  # noqa: S603 - our own arguments
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on a scrape's text (names, types, help, units)."""
    return promtool("check", "metrics", stdin=text)


class Prometheus:
    """A private Prometheus scraping ``targets`` (job name -> ``host:port`` list)."""

    def __init__(
        self, targets: Mapping[str, Sequence[str]], *, scrape_interval: float = 1.0
    ) -> None:
        """Describe the server; :meth:`start` (or ``with``) runs it."""
        self._targets = {job: list(hosts) for job, hosts in targets.items()}
        self._interval = scrape_interval
        self._daemon: Daemon | None = None
        self.directory: Path | None = None
        self.url = ""

    def __enter__(self) -> Self:
        """Start it."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop it."""
        self.stop()

    def start(self) -> None:
        """Write its config, run it and wait until it is ready.

        Raises:
            RuntimeError: When it is not installed, or did not get ready in time (the message
                ends with the tail of its output).
        """
        if reason := prometheus_missing_reason():
            raise RuntimeError(reason)
        self.directory = root = Path(tempfile.mkdtemp(prefix="pta-prometheus-"))
        atexit.register(self.stop)
        interval = f"{max(1, round(self._interval * 1000))}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in self._targets.items()
            ],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML.
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv: list[str | Path] = [
            "prometheus",
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        self._daemon = Daemon("prometheus", argv, root / "prometheus.log", die_with_parent=True)
        try:
            self._daemon.start(self._ready, timeout=READY_TIMEOUT, poll=0.05)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:  # noqa: S310
                return bool(reply.status == 200)  # noqa: PLR2004 - HTTP OK
        except (urllib.error.URLError, OSError):
            return False

    def _api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            url = f"{self.url}{path}{query}"  # http://127.0.0.1:PORT, ours
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as reply:  # noqa: S310
                body = json.loads(reply.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"prometheus {path}: {error.read().decode()[:500]}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (each: ``metric`` labels and ``value``)."""
        data = self._api("/api/v1/query", query=expr)
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, with their ``health`` and ``lastError``."""
        return list(self._api("/api/v1/targets")["activeTargets"])

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Query ``expr`` until ``predicate`` holds for the result; that result.

        Raises:
            AssertionError: When ``timeout`` passes first (with the last result).
        """
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.2)
        raise AssertionError(f"prometheus: {expr!r} never held; last result {result}")

    def stop(self) -> None:
        """Stop it and remove its directory (idempotent; also at interpreter exit)."""
        atexit.unregister(self.stop)
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            daemon.stop(timeout=STOP_TIMEOUT)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
