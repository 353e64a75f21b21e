"""``agent/health.py``: checks by kind, binds per server, and the metrics still counted."""

from __future__ import annotations

from agent.health import BIND_WINDOW, Health
from agent.metrics import OFF


class _Recorder:
    """Counts as the metrics would, to prove each event reaches them too."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def validated(self, outcome: str) -> None:
        self.events.append(("validated", outcome))

    def directory_request(self, url: str, operation: str, seconds: float) -> None:
        self.events.append(("request", url, operation, seconds))

    def server_up(self, url: str, *, up: bool, reason: str = "") -> None:
        self.events.append(("up", url, up, reason))


def test_checks_by_kind_and_passed_on() -> None:
    """SUCCESS, answers about the user, and errors; every event also reaches the metrics."""
    metrics = _Recorder()
    health = Health(["ldap://dc1:389"], metrics, clock=lambda: 100.0)
    for outcome in ("SUCCESS", "INVALID_CREDENTIALS", "ACCOUNT_LOCKED", "DIRECTORY_UNAVAILABLE"):
        health.validated(outcome)
    report = health.report()
    assert (report.handled, report.succeeded, report.failed, report.errors) == (4, 1, 2, 1)
    assert report.started_at == 100.0
    assert len(metrics.events) == 4


def test_binds_median_over_a_window_and_the_last_error() -> None:
    """The median of the last binds only; searches are not binds; a failure says why and when."""
    now = [0.0]
    health = Health(["ldaps://dc1.example.com:636/dc=x"], OFF, clock=lambda: now[0])
    for _ in range(BIND_WINDOW):
        health.directory_request("ldaps://dc1.example.com:636", "bind", 0.100)
    for _ in range(BIND_WINDOW):
        health.directory_request("ldaps://dc1.example.com:636", "bind", 0.002)
    health.directory_request("ldaps://dc1.example.com:636", "search", 5.0)
    health.server_up("ldaps://dc1.example.com:636", up=True)
    [server] = health.report().servers
    assert server.server == "ldaps://dc1.example.com:636"  # Label: no DN, as the metrics.
    assert server.median_bind_ms == 2.0
    assert server.binds == 2 * BIND_WINDOW
    assert server.reachable
    now[0] = 42.0
    health.server_up("ldaps://dc1.example.com:636", up=False, reason="cannot connect: refused")
    [server] = health.report().servers
    assert (server.reachable, server.last_error, server.last_error_at) == (
        False, "cannot connect: refused", 42.0,
    )  # fmt: skip


def test_a_server_not_used_yet() -> None:
    """Configured but never used: listed, not reachable, no error."""
    [server] = Health(["ldap://dc2:389"]).report().servers
    assert (server.server, server.reachable, server.last_error, server.binds) == (
        "ldap://dc2:389", False, "", 0,
    )  # fmt: skip
