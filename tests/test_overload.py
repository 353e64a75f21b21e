"""Overload, deadlines, rate limits, silent agents and certificate floods: clear answers, fast."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pta import tls
from pta.v1 import agent_pb2, agent_pb2_grpc, outcome_pb2, signin_pb2, signin_pb2_grpc
from tests.conftest import USERS
from tests.support import AgentProcess, BrokerProcess, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cryptography.hazmat.primitives.asymmetric import ec

    from tooling.slapd import Slapd

Outcome = outcome_pb2.Outcome
QUEUE_LIMIT = 8
IN_FLIGHT = 2


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _status(channel: grpc.Channel, client_ip: str, timeout: float = 10.0) -> str:
    stub = signin_pb2_grpc.SignInServiceStub(channel)
    try:
        reply = stub.SignIn(
            signin_pb2.SignInRequest(
                username="alice@busy.example", password=USERS["alice"], client_ip=client_ip
            ),
            timeout=timeout,
        )
    except grpc.RpcError as error:
        return str(error.code().name)
    return str(Outcome.Name(reply.outcome))


@pytest.fixture(scope="module")
def busy(run_dir: Path, slapd: Slapd) -> Iterator[tuple[BrokerProcess, AgentProcess]]:
    """A broker with a queue of 8 and 20 sign-ins/s per address; an agent taking 2 at once."""
    broker = BrokerProcess.start(
        run_dir,
        "broker-busy",
        *("--queue-limit", str(QUEUE_LIMIT), "--rate-limit", "20", "--rate-burst", "20"),
        *("--signin-timeout", "60s"),
        *("--trusted-proxy", "127.0.0.1/32"),
    )
    broker.add_tenant("busy", "busy.example")
    # Forty sign-ins of one user at once: the lockout would (rightly) let only as many run as
    # may still fail before it locks. These tests are about the queue.
    broker.cli("tenant", "policy", "busy", "--lockout-threshold", "0")
    agent = AgentProcess.start(broker, slapd, "busy", "agent-busy", "--max-in-flight", "2")
    yield broker, agent
    agent.stop()
    broker.stop()


class TestOverload:
    """A full queue answers RESOURCE_EXHAUSTED at once, and memory stays flat."""

    def test_full_queue(self, busy: tuple[BrokerProcess, AgentProcess]) -> None:
        """With the agent frozen, 2 go in flight, 8 wait, the rest are refused at once."""
        broker, agent = busy
        agent.process.send_signal(signal.SIGSTOP)
        try:
            with broker.channel() as channel, concurrent.futures.ThreadPoolExecutor(40) as pool:
                # The ten that wait must outlive the refusals below, however slow the machine:
                # once their deadline passes, the queue has room and a refusal would wait too.
                futures = [pool.submit(_status, channel, f"203.0.113.{n}", 30.0) for n in range(40)]
                refusals = 40 - QUEUE_LIMIT - IN_FLIGHT
                wait_for(
                    lambda: sum(f.done() for f in futures) >= refusals,
                    timeout=20,
                    what=f"{refusals} sign-ins to be refused",
                )
                refused = [f.result() for f in futures if f.done()]
                # Exactly: the agent is stopped, so the ten let in cannot have been answered.
                assert refused == ["RESOURCE_EXHAUSTED"] * refusals
                rss_before = _rss_kib(broker.process.pid)
                until = time.monotonic() + 20
                for n in range(1500):
                    assert _status(channel, f"198.51.100.{n % 250}") == "RESOURCE_EXHAUSTED"
                    if time.monotonic() > until:
                        break
                rss_after = _rss_kib(broker.process.pid)
                agent.process.send_signal(signal.SIGCONT)
                waited = [f.result() for f in futures if f.result() != "RESOURCE_EXHAUSTED"]
        finally:
            agent.process.send_signal(signal.SIGCONT)
        assert waited == ["SUCCESS"] * (QUEUE_LIMIT + IN_FLIGHT)
        growth = rss_after - rss_before
        print(f"\noverload: {n + 1} refused sign-ins, broker RSS {rss_before} -> {rss_after} KiB")  # noqa: T201
        assert growth < 8 * 1024, f"broker memory grew {growth} KiB under overload"

    def test_client_deadline_is_kept(self, busy: tuple[BrokerProcess, AgentProcess]) -> None:
        """A client's short deadline bounds the wait, even when no agent answers."""
        broker, agent = busy
        agent.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with broker.channel() as channel:
                status = _status(channel, "203.0.113.200", timeout=0.5)
            elapsed = time.monotonic() - started
        finally:
            agent.process.send_signal(signal.SIGCONT)
        assert status == "DEADLINE_EXCEEDED"
        assert elapsed < 1.5


class TestRateLimit:
    """Per client address, configurable."""

    def test_one_address_is_limited_others_are_not(
        self, busy: tuple[BrokerProcess, AgentProcess]
    ) -> None:
        """Past its burst an address is refused; another address still signs in."""
        broker, _ = busy
        with broker.channel() as channel:
            answers = [_status(channel, "203.0.113.77") for _ in range(30)]
            other = _status(channel, "203.0.113.78")
        assert answers.count("SUCCESS") >= 20
        assert "RESOURCE_EXHAUSTED" in answers
        assert other == "SUCCESS"


class TestSilentAgent:
    """An agent that goes silent (frozen, or its network cut) is dropped; its peer answers.

    Silence is noticed by missed application heartbeats, which load balancers cannot hide.
    """

    def test_frozen_agent_is_dropped(self, run_dir: Path, slapd: Slapd) -> None:
        """Missed heartbeats end its stream within three intervals; sign-ins keep working."""
        broker = BrokerProcess.start(run_dir, "broker-heartbeat", "--heartbeat-interval", "0.5")
        broker.add_tenant("hb", "hb.example")
        agents = [AgentProcess.start(broker, slapd, "hb", f"agent-hb-{i}") for i in range(2)]
        try:
            frozen = agents[0]
            frozen.process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            wait_for(
                lambda: any(
                    e.get("agent_id") == frozen.agent_id
                    for e in broker.log_events("agent.heartbeats_missed")
                ),
                timeout=10,
                what="missed heartbeats to be noticed",
            )
            assert time.monotonic() - started < 3.0
            for _ in range(5):
                assert broker.sign_in("alice@hb.example", USERS["alice"]).outcome == 1
            frozen.process.send_signal(signal.SIGCONT)
            wait_for(
                lambda: (
                    sum(
                        e.get("agent_id") == frozen.agent_id
                        for e in broker.log_events("agent.connected")
                    )
                    >= 2
                ),
                timeout=40,
                what="the thawed agent to reconnect",
            )
        finally:
            for agent in agents:
                agent.process.send_signal(signal.SIGCONT)
                agent.stop()
            broker.stop()


class TestCertificateFlood:
    """Connect attempts without a valid certificate die in the handshake; serving goes on."""

    def test_flood(self, busy: tuple[BrokerProcess, AgentProcess], tmp_path: Path) -> None:
        """200 attempts with no certificate or a self-signed one: all refused, broker fine."""
        broker, _ = busy
        key = tls.new_private_key()
        forged = tls.channel_credentials(
            broker.ca_file.read_bytes(), tls.key_pem(key), _self_signed(key, tmp_path)
        )
        anonymous = grpc.ssl_channel_credentials(broker.ca_file.read_bytes())
        refused = 0
        rss_before = _rss_kib(broker.process.pid)
        for n in range(200):
            with grpc.secure_channel(broker.agent, forged if n % 2 else anonymous) as channel:
                call = agent_pb2_grpc.AgentServiceStub(channel).Connect(
                    iter([agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="x"))]),
                    timeout=5,
                )
                with pytest.raises(grpc.RpcError):
                    list(call)
                refused += 1
        assert refused == 200
        assert _rss_kib(broker.process.pid) - rss_before < 8 * 1024
        with broker.channel() as channel:
            assert _status(channel, "203.0.113.250") == "SUCCESS"


def _self_signed(key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> bytes:
    import datetime  # noqa: PLC0415 - only this helper needs it

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415

    del tmp_path
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(tls.name("forged"))
        .issuer_name(tls.name("forged"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return tls.cert_pem(cert)
