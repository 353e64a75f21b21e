"""Prometheus itself reads what pta serves: the rules, real scrapes, a real server.

promtool checks docs/alerts.yml and runs its unit tests (tests/alerts_test.yml), and checks
real scrapes of a broker and an agent; a real Prometheus server scrapes both and answers
queries through its HTTP API.
"""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry, Counter

from pta.metrics_http import MetricsHttp
from tests.metrics_scrape import scrape
from tests.secrets_registry import secret
from tests.support import ROOT, AgentProcess, BrokerProcess
from tooling.prometheus import Prometheus, check_metrics, prometheus_missing_reason, promtool
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REASON = prometheus_missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
DOMAIN = "scraped.example"
USERS = {"dot": secret("Dot-Scraped-3!")}
WRONG = secret("Wrong-Scraped-4?")


class TestRules:
    """docs/alerts.yml is valid, and each alert fires when it should (promtool's unit tests)."""

    def test_the_rules_are_valid(self) -> None:
        """``promtool check rules``."""
        done = promtool("check", "rules", str(ROOT / "docs" / "alerts.yml"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS: 6 rules found" in done.stdout

    def test_the_rules_fire_when_they_should(self) -> None:
        """``promtool test rules tests/alerts_test.yml``: fires, and stays quiet, as written."""
        done = promtool("test", "rules", str(ROOT / "tests" / "alerts_test.yml"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


@pytest.fixture(scope="module")
def scraped(run_dir: Path) -> Iterator[tuple[BrokerProcess, AgentProcess, str]]:
    """A broker and an agent serving metrics; the agent's metrics endpoint."""
    with Slapd(users=[DirectoryUser(uid=u, password=p) for u, p in USERS.items()]) as slapd:
        broker = BrokerProcess.start(run_dir, "broker-scraped", "--metrics-listen", "127.0.0.1:0")
        try:
            broker.add_tenant("scr", DOMAIN)
            broker.cli("tenant", "policy", "scr", "--lockout-threshold", "0")
            metrics = f"127.0.0.1:{free_port()}"
            agent = AgentProcess.start(
                broker, slapd, "scr", "agent-scraped", "--metrics-listen", metrics
            )
            try:
                yield broker, agent, metrics
            finally:
                agent.stop()
        finally:
            broker.stop()


class TestScrapes:
    """Real scrapes pass ``promtool check metrics``; a real Prometheus reads both processes."""

    def test_promtool_accepts_both_scrapes(
        self, scraped: tuple[BrokerProcess, AgentProcess, str]
    ) -> None:
        """Names, types, help and units as Prometheus wants them, at the broker and the agent."""
        broker, _, agent_metrics = scraped
        broker.sign_in(f"dot@{DOMAIN}", USERS["dot"])
        for endpoint in (broker.metrics, agent_metrics):
            text, _ = scrape(endpoint)
            done = check_metrics(text)
            assert done.returncode == 0, f"{endpoint}: {done.stdout}{done.stderr}"

    def test_a_prometheus_server_answers_for_the_sign_ins(
        self, scraped: tuple[BrokerProcess, AgentProcess, str]
    ) -> None:
        """Scraping both every second, it answers a query for ``pta_signins_total``.

        Two right passwords and one wrong through the broker; its API then says exactly that
        (broker), and the agent's checks and its directory server up.
        """
        broker, _, agent_metrics = scraped
        with Prometheus({"broker": [broker.metrics], "agent": [agent_metrics]}) as prometheus:
            prometheus.wait_for(
                "up", lambda result: len(result) == 2 and all(r["value"][1] == "1" for r in result)
            )
            _, before = scrape(broker.metrics)
            for password in (USERS["dot"], USERS["dot"], WRONG):
                broker.sign_in(f"dot@{DOMAIN}", password)

            def total(outcome: str) -> float:
                key = (
                    "pta_signins_total",
                    tuple(sorted({"tenant": "scr", "outcome": outcome, "api": "signin"}.items())),
                )
                return before.get(key, 0.0)

            expected = {
                "SUCCESS": total("SUCCESS") + 2,
                "INVALID_CREDENTIALS": total("INVALID_CREDENTIALS") + 1,
            }

            def counted(result: list[dict[str, object]]) -> bool:
                seen = {
                    r["metric"]["outcome"]: float(r["value"][1])  # type: ignore[index]
                    for r in result
                }
                return all(seen.get(k) == v for k, v in expected.items())

            prometheus.wait_for('pta_signins_total{tenant="scr",api="signin"}', counted)
            up = prometheus.wait_for(
                'pta_directory_server_up{job="agent"}', lambda result: len(result) == 1
            )
            assert up[0]["value"][1] == "1"
            prometheus.wait_for(
                'sum(pta_agent_validations_total{job="agent"})',
                lambda result: bool(result) and float(result[0]["value"][1]) >= 3,
            )
            health = {t["labels"]["job"]: t["health"] for t in prometheus.targets()}
            assert health == {"broker": "up", "agent": "up"}


def test_the_fixture_scrapes_a_plain_exporter() -> None:
    """The fixture alone, on prometheus-client's own exporter: a counter the test moves."""
    registry = CollectorRegistry()
    ticks = Counter("fixture_ticks", "Ticks the test made.", registry=registry)
    ticks.inc(7)
    http = MetricsHttp(registry)
    port = http.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert check_metrics(reply.read().decode()).returncode == 0
        with Prometheus({"plain": [f"127.0.0.1:{port}"]}) as prometheus:
            result = prometheus.wait_for("fixture_ticks_total", lambda r: len(r) == 1)
            assert result[0]["value"][1] == "7"
    finally:
        http.close()
