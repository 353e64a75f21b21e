"""``pta-agent run --metrics-listen``: a real agent's ``/metrics``, scraped as Prometheus does.

A broker, an agent and a private slapd, all real processes: the agent's counters move by the
checks made, each LDAP request is timed against the server that answered it, the broker's
stream and the certificate are shown, and a directory that stops answering is shown down.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from agent.identity import TLS_CERT_FILE
from pta.v1 import outcome_pb2
from tests.metrics_scrape import Scrape, scrape, value
from tests.secrets_registry import secret
from tests.support import BIN, AgentProcess, BrokerProcess, wait_for
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
DOMAIN = "agentmetrics.example"
USERS = {name: secret(f"{name.capitalize()}-AgentMetrics-5!") for name in ("bea", "cid")}
WRONG = secret("Wrong-AgentMetrics-6?")


@dataclass
class Watched:
    """The module's broker, its directory and its agent with metrics on."""

    broker: BrokerProcess
    slapd: Slapd
    agent: AgentProcess
    metrics: str

    def sign_in(self, uid: str, password: str) -> str:
        """One sign-in's outcome name, or its status's name."""
        return self.broker.outcome(f"{uid}@{DOMAIN}", password)

    def scrape(self) -> Scrape:
        """The agent's samples now."""
        return scrape(self.metrics)[1]


@pytest.fixture(scope="module")
def watched(run_dir: Path) -> Iterator[Watched]:
    """A broker (lockout off), a slapd of its own, an agent with ``--metrics-listen``."""
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
    with Slapd(users=users) as slapd:
        broker = BrokerProcess.start(run_dir, "broker-agent-metrics")
        try:
            broker.add_tenant("am", DOMAIN)
            broker.cli("tenant", "policy", "am", "--lockout-threshold", "0")
            metrics = f"127.0.0.1:{free_port()}"
            agent = AgentProcess.start(
                broker, slapd, "am", "agent-with-metrics", "--metrics-listen", metrics
            )
            try:
                yield Watched(broker, slapd, agent, metrics)
            finally:
                agent.stop()
        finally:
            broker.stop()


class TestCounts:
    """Checks, directory requests, links and the certificate."""

    def test_checks_and_directory_requests(self, watched: Watched) -> None:
        """2 right and 1 wrong: exactly those checks, each with its binds timed at slapd."""
        before = watched.scrape()
        outcomes = [watched.sign_in("bea", USERS["bea"]), watched.sign_in("cid", USERS["cid"])]
        outcomes.append(watched.sign_in("bea", WRONG))
        assert outcomes == ["SUCCESS", "SUCCESS", "INVALID_CREDENTIALS"]
        text, after = scrape(watched.metrics)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        checks = "pta_agent_validations_total"
        assert delta(checks, outcome="SUCCESS") == 2
        assert delta(checks, outcome="INVALID_CREDENTIALS") == 1
        server = watched.slapd.url
        binds = "pta_directory_request_duration_seconds_count"
        assert delta(binds, server=server, operation="bind") == 3
        assert value(after, binds, server=server, operation="search") >= 2  # DNs are cached.
        assert value(after, "pta_directory_server_up", server=server) == 1
        for word in ("bea", "cid", USERS["bea"], USERS["cid"], WRONG, watched.slapd.base_dn):
            assert word not in text

    def test_the_broker_link_and_the_certificate(self, watched: Watched) -> None:
        """The broker's stream is up; the certificate's dates are the file's."""
        cert = x509.load_pem_x509_certificate(
            (watched.agent.state_dir / TLS_CERT_FILE).read_bytes()
        )
        wait_for(
            lambda: (
                value(watched.scrape(), "pta_agent_broker_connected", broker=watched.broker.agent)
                == 1
            )
        )
        samples = watched.scrape()
        assert value(samples, "pta_agent_certificate_expiry_timestamp_seconds") == pytest.approx(
            cert.not_valid_after_utc.timestamp()
        )
        assert value(samples, "pta_agent_certificate_issued_timestamp_seconds") == pytest.approx(
            cert.not_valid_before_utc.timestamp()
        )
        assert any(name == "pta_agent_info" for name, _ in samples)

    def test_the_audit_says_where_the_time_went(self, watched: Watched) -> None:
        """Each sign-in's audit event: time at the agent, and of it at the directory."""
        assert watched.sign_in("cid", USERS["cid"]) == "SUCCESS"
        event = [
            e for e in watched.broker.log_events("signin.completed") if e.get("tenant") == "am"
        ][-1]
        agent_ms, directory_ms = float(event["agent_ms"]), float(event["directory_ms"])  # type: ignore[arg-type]
        assert 0 < directory_ms <= agent_ms < 10_000, event

    def test_a_directory_that_stops_answering_is_down(self, watched: Watched) -> None:
        """The directory stopped: the sign-in is UNAVAILABLE and its server 0.

        Last in the module: the directory stays down.
        """
        watched.slapd.stop()
        assert watched.sign_in("cid", USERS["cid"]) == "UNAVAILABLE"
        assert value(watched.scrape(), "pta_directory_server_up", server=watched.slapd.url) == 0


def test_an_address_that_cannot_be_bound_is_refused(watched: Watched) -> None:
    """A metrics port already taken: the agent says so and exits, no traceback."""
    taken = free_port()
    state = watched.broker.data_dir.parent / "agent-metrics-refused"
    AgentProcess.enrol(watched.broker, "am", state)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        done = subprocess.run(
            [
                str(BIN / "pta-agent"),
                "run",
                *("--state-dir", str(state), "--ldap-url", "ldap://127.0.0.1:1"),
                *("--base-dn", "dc=example,dc=com", "--metrics-listen", f"127.0.0.1:{taken}"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{taken}" in done.stderr
    assert "Traceback" not in done.stderr
