"""``pta-broker serve --metrics-listen``: a real broker's ``/metrics``, scraped as Prometheus does.

The broker, its agent and slapd are real processes; each test scrapes the broker's endpoint
over HTTP, parses the text with ``prometheus-client``'s own parser, and checks that the
counters moved by exactly what the test did, that the gauges say what is, and that nothing
an operator may not see (a user name, a password, a code) is in any label.
"""

from __future__ import annotations

import base64
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest
from cryptography import x509

from agent.identity import TLS_CERT_FILE
from broker.policy import mfa
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tests.metrics_scrape import Scrape, scrape, value
from tests.secrets_registry import known, secret
from tests.support import AgentProcess, BrokerProcess, refused_serve, wait_for
from tooling.postgres import Postgres, postgres_missing_reason
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

Outcome = outcome_pb2.Outcome
DOMAIN = "metrics.example"
USERS = {
    name: secret(f"{name.capitalize()}-Metrics-8!")
    for name in ("ann", "wrongy", "streamer", "locky", "mfa-user")
}
WRONG = [secret(f"Wrong-Metrics-{n}?") for n in range(4)]


@dataclass
class Watched:
    """The module's broker (with metrics), its agent, its directory and its MFA key."""

    broker: BrokerProcess
    agent: AgentProcess
    key_file: Path

    def sign_in(self, uid: str, password: str) -> str:
        """One sign-in's outcome name, or its status's name."""
        return self.broker.outcome(f"{uid}@{DOMAIN}", password)


@pytest.fixture(scope="module")
def watched(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """A broker with ``--metrics-listen 127.0.0.1:0``, tenants ``mtr`` (an agent) and ``idle``."""
    key_file = tmp_path_factory.mktemp("keys") / "metrics-mfa.key"
    made = BrokerProcess.cli_without_data("mfa", "keygen", str(key_file))
    assert made.returncode == 0, made.stderr
    known(key_file.read_text().strip())
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
    with Slapd(users=users) as slapd:
        broker = BrokerProcess.start(
            run_dir,
            "broker-metrics",
            *("--metrics-listen", "127.0.0.1:0", "--mfa-key-file", str(key_file)),
        )
        try:
            assert broker.metrics.startswith("127.0.0.1:"), broker.metrics
            broker.add_tenant("mtr", DOMAIN)
            broker.add_tenant("idle", "idle.example")
            broker.cli("tenant", "policy", "mtr", "--lockout-threshold", "2")
            agent = AgentProcess.start(broker, slapd, "mtr", "agent-metrics")
            yield Watched(broker, agent, key_file)
            agent.stop()
        finally:
            broker.stop()


class TestSignIns:
    """Every sign-in is counted once, by tenant, outcome and API, and timed."""

    def test_counters_move_by_what_was_done(self, watched: Watched) -> None:
        """3 right, 2 wrong, 1 of an unknown domain: exactly those deltas, nothing in flight.

        (The wrong ones are another user's: threshold 2 locks them.)
        """
        _, before = scrape(watched.broker.metrics)
        outcomes = [watched.sign_in("ann", USERS["ann"]) for _ in range(3)]
        outcomes += [watched.sign_in("wrongy", WRONG[0]), watched.sign_in("wrongy", WRONG[1])]
        try:
            watched.broker.sign_in("ann@nowhere.example", USERS["ann"])
        except grpc.RpcError as error:
            outcomes.append(error.code().name)
        assert outcomes == ["SUCCESS"] * 3 + ["INVALID_CREDENTIALS"] * 2 + ["NOT_FOUND"]
        text, after = scrape(watched.broker.metrics)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        signins = "pta_signins_total"
        assert delta(signins, tenant="mtr", outcome="SUCCESS", api="signin") == 3
        assert delta(signins, tenant="mtr", outcome="INVALID_CREDENTIALS", api="signin") == 2
        assert delta(signins, tenant="", outcome="NOT_FOUND", api="signin") == 1
        assert delta("pta_signin_duration_seconds_count", api="signin") == 6
        assert delta("pta_signin_duration_seconds_sum", api="signin") > 0
        assert value(after, "pta_signins_in_flight") == 0
        for name in ("ann", "wrongy", USERS["ann"], WRONG[0], WRONG[1]):
            assert name not in text

    def test_a_stream_is_its_own_api(self, watched: Watched) -> None:
        """Sign-ins over SignInStream count under ``api="signin_stream"``."""
        _, before = scrape(watched.broker.metrics)
        with watched.broker.channel() as channel:
            stub = signin_pb2_grpc.SignInServiceStub(channel)
            items = [
                signin_pb2.SignInItem(
                    id=n,
                    request=signin_pb2.SignInRequest(
                        username=f"streamer@{DOMAIN}", password=USERS["streamer"]
                    ),
                )
                for n in (1, 2)
            ]
            answers = [
                item
                for batch in stub.SignInStream(
                    iter([signin_pb2.SignInBatch(items=items)]), timeout=15
                )
                for item in batch.answers
            ]
        assert [a.response.outcome for a in answers] == [Outcome.SUCCESS] * 2
        _, after = scrape(watched.broker.metrics)
        key = {"tenant": "mtr", "outcome": "SUCCESS", "api": "signin_stream"}
        assert (
            value(after, "pta_signins_total", **key) - value(before, "pta_signins_total", **key)
            == 2
        )


class TestPolicy:
    """Lockouts and second factors are counted where the broker decides them."""

    def test_a_lockout_is_counted_once(self, watched: Watched) -> None:
        """Threshold 2: two wrong passwords lock ``locky``; the third is answered locked."""
        _, before = scrape(watched.broker.metrics)
        outcomes = [watched.sign_in("locky", wrong) for wrong in WRONG[:3]]
        assert outcomes[-1] == "LOCKED_BY_POLICY", outcomes
        _, after = scrape(watched.broker.metrics)
        locks = sum(
            value(after, "pta_lockouts_total", tenant="mtr", location=where)
            - value(before, "pta_lockouts_total", tenant="mtr", location=where)
            for where in ("familiar", "unfamiliar")
        )
        assert locks == 1

    def test_codes_are_counted_by_result(self, watched: Watched) -> None:
        """A wrong code counts as INVALID_CREDENTIALS, the right one as OK."""
        broker = watched.broker
        enrolled = broker.cli(
            "mfa", "enroll", "--tenant", "mtr", f"mfa-user@{DOMAIN}",
            "--mfa-key-file", str(watched.key_file),
        )  # fmt: skip
        query = urllib.parse.urlparse(enrolled.stdout.strip()).query
        totp = known(urllib.parse.parse_qs(query)["secret"][0])
        key = base64.b32decode(totp + "=" * (-len(totp) % 8))
        broker.cli("tenant", "policy", "mtr", "--mfa", "always")
        try:
            wait_for(lambda: watched.sign_in("mfa-user", USERS["mfa-user"]) == "MFA_REQUIRED")
            _, before = scrape(broker.metrics)
            right = known(mfa.code_at(key, time.time()))
            near = {mfa.code_at(key, time.time() + step * mfa.TIME_STEP) for step in range(-3, 4)}
            wrong = known(
                next(f"{n:06d}" for n in range(111_111, 999_999, 111_111) if f"{n:06d}" not in near)
            )
            answers = [_complete(watched, code) for code in (wrong, right)]
            assert answers == ["INVALID_CREDENTIALS", "SUCCESS"]
            text, after = scrape(broker.metrics)
        finally:
            broker.cli("tenant", "policy", "mtr", "--mfa", "never")
        for result in ("INVALID_CREDENTIALS", "OK"):
            moved = value(after, "pta_mfa_total", tenant="mtr", result=result) - value(
                before, "pta_mfa_total", tenant="mtr", result=result
            )
            assert moved == 1, result
        assert right not in text
        assert "mfa-user" not in text


def _complete(watched: Watched, code: str) -> str:
    """Sign in with the right password, then answer its challenge with ``code``."""
    with watched.broker.channel() as channel:
        stub = signin_pb2_grpc.SignInServiceStub(channel)
        first = stub.SignIn(
            signin_pb2.SignInRequest(username=f"mfa-user@{DOMAIN}", password=USERS["mfa-user"]),
            timeout=15,
        )
        known(first.mfa_challenge_id)
        reply = stub.CompleteMfa(
            signin_pb2.CompleteMfaRequest(challenge_id=first.mfa_challenge_id, code=code),
            timeout=10,
        )
    return str(Outcome.Name(reply.outcome))


class TestWhatIs:
    """Agents, streams, queues and certificates, as of the last second."""

    def test_agents_streams_queues_and_certificates(self, watched: Watched) -> None:
        """``mtr`` has its agent, ``idle`` shows 0 (not nothing); the certificate's dates."""
        cert = x509.load_pem_x509_certificate(
            (watched.agent.state_dir / TLS_CERT_FILE).read_bytes()
        )
        agent = watched.agent.agent_id

        def current() -> Scrape:
            return scrape(watched.broker.metrics)[1]

        wait_for(lambda: value(current(), "pta_agents_connected", tenant="mtr") == 1)
        samples = current()
        assert value(samples, "pta_agent_streams", tenant="mtr") == 1
        assert ("pta_agents_connected", (("tenant", "idle"),)) in samples
        assert value(samples, "pta_agents_connected", tenant="idle") == 0
        assert value(samples, "pta_tenant_queue_depth", tenant="mtr") == 0
        expiry = value(samples, "pta_agent_certificate_expiry_timestamp_seconds", agent=agent)
        issued = value(samples, "pta_agent_certificate_issued_timestamp_seconds", agent=agent)
        assert expiry == pytest.approx(cert.not_valid_after_utc.timestamp(), abs=1)
        assert cert.not_valid_before_utc.timestamp() - 600 <= issued <= expiry
        assert value(samples, "pta_store_errors_total") == 0
        assert any(name == "pta_broker_info" for name, _ in samples)
        assert value(samples, "process_cpu_seconds_total") > 0


def test_an_address_that_cannot_be_bound_refuses_to_start(tmp_path: Path) -> None:
    """A taken metrics port: the broker says so and exits, no traceback."""
    taken = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        done = refused_serve(
            tmp_path / "refused",
            *("--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"),
            *("--metrics-listen", f"127.0.0.1:{taken}"),
        )
    assert done.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{taken}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(postgres_missing_reason() is not None, reason=postgres_missing_reason() or "")
def test_store_errors_are_counted(run_dir: Path) -> None:
    """PostgreSQL stopped under a broker: sign-ins are UNAVAILABLE and each is a store error."""
    with Postgres() as server:
        broker = BrokerProcess.start(
            run_dir, "broker-metrics-pg", "--metrics-listen", "127.0.0.1:0", store=server.url
        )
        try:
            broker.add_tenant("pg", "pg.example")
            _, before = scrape(broker.metrics)
            assert value(before, "pta_store_errors_total") == 0
            server.stop()
            codes = []
            for _ in range(3):
                try:
                    broker.sign_in("ann@pg.example", USERS["ann"], timeout=5)
                except grpc.RpcError as error:
                    codes.append(error.code().name)
            assert codes == ["UNAVAILABLE"] * 3
            _, after = scrape(broker.metrics)
            assert value(after, "pta_store_errors_total") >= 3
            assert (
                value(after, "pta_signins_total", tenant="", outcome="UNAVAILABLE", api="signin")
                + value(
                    after, "pta_signins_total", tenant="pg", outcome="UNAVAILABLE", api="signin"
                )
                == 3
            )
        finally:
            broker.stop()
