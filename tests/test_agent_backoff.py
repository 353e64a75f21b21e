"""An agent whose broker is down retries, backing off: its renewal and its stream alike.

``agent/runner.py`` renews two thirds into the certificate's life and, while that fails,
retries after a jittered delay in [d/2, d] with d doubling from ``RETRY_INITIAL`` (to
``RETRY_MAX``), the last retry when the certificate expires. ``agent/link.py`` dials again
after a jittered pause in [0, d] with d doubling from ``BACKOFF_INITIAL`` to ``BACKOFF_MAX``,
back to the start after a session that lasted ``HEALTHY_SESSION``. Both are first watched in a
real agent process whose broker was stopped; the link's exact doubling, cap and reset are
then checked on a real link, in this process, with small constants and the longest jitter.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import structlog

from agent import link as link_module
from agent import runner
from agent.identity import AgentIdentity
from agent.link import Link
from agent.validation import ReplayGuard, Validator
from pta import tls
from tests.support import AgentProcess, BrokerProcess, wait_for
from tooling.slapd import free_port

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from structlog.typing import EventDict, Processor, WrappedLogger

    from tooling.slapd import Slapd

LIFETIME = 12.0
#: How much later than its computed time a step may happen on a busy machine.
SLACK = 1.5


def _at(event: dict[str, object]) -> float:
    return datetime.datetime.fromisoformat(str(event["timestamp"])).timestamp()


@dataclass
class Stranded:
    """What an agent did between its broker stopping and its certificate expiring."""

    renewals: list[dict[str, object]]
    reconnects: list[dict[str, object]]
    broker_stopped: float
    due: float
    expiry: float


@pytest.fixture(scope="module")
def stranded(run_dir: Path, slapd: Slapd) -> Stranded:
    """An agent with a 12 s certificate whose broker stops at once; watched until it expires."""
    broker = BrokerProcess.start(
        run_dir, "broker-stranded", "--agent-cert-lifetime", f"{LIFETIME:g}s"
    )
    broker.add_tenant("stranded", "stranded.example")
    agent = AgentProcess.start(broker, slapd, "stranded", "agent-stranded")
    try:
        broker.stop()
        stopped = time.time()
        wait_for(
            lambda: agent.log_events("agent.certificate_expired"),
            timeout=LIFETIME + 20,
            what="the certificate to expire",
        )
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.wait(20)
        broker.stop()
    cert = tls.load_cert((agent.state_dir / "tls.pem").read_bytes())
    return Stranded(
        renewals=agent.log_events("agent.renewal_failed"),
        reconnects=agent.log_events("link.reconnecting"),
        broker_stopped=stopped,
        due=tls.renewal_due(cert).timestamp(),
        expiry=cert.not_valid_after_utc.timestamp(),
    )


class TestRenewalRetry:
    """Renewal against a broker that is down: retried, backing off, until the last moment."""

    def test_retries_back_off_until_expiry(self, stranded: Stranded) -> None:
        """Tried when due, again after [d/2, d] with d = 1 s, 2 s, ..., last at expiry."""
        times = [_at(e) for e in stranded.renewals]
        assert len(times) >= 3, stranded.renewals
        assert {e["status"] for e in stranded.renewals} == {"UNAVAILABLE"}
        assert stranded.due - 0.1 <= times[0] <= stranded.due + SLACK
        delay = runner.RETRY_INITIAL
        for before, after in itertools.pairwise(times):
            if after < stranded.expiry - 0.2:  # Not cut short by the expiry.
                assert delay / 2 - 0.05 <= after - before <= delay + SLACK, (delay, times)
            delay = min(delay * 2, runner.RETRY_MAX)
        # Retried until the certificate expired: the last attempt came as it did.
        assert stranded.expiry - 0.2 <= times[-1] <= stranded.expiry + SLACK, times
        # Info while a third of the life is left; a warning once under a tenth.
        for event in stranded.renewals:
            expected = "warning" if float(str(event["life_left"])) < 0.10 else "info"
            assert event["level"] == expected, event


class TestReconnectBackoff:
    """The stream to a broker that is down is dialled again after growing pauses."""

    def test_pauses_stay_under_a_doubling_bound(self, stranded: Stranded) -> None:
        """Pause k is at most 0.5 s x 2^k (capped at 30 s); they grow, so dials are few.

        The broker was down for the certificate's remaining ~10 s: without the doubling the
        link would dial some forty times (a pause of 0.25 s on average); with it, far fewer
        (ten or more happens by chance less than once in ten thousand runs).
        """
        pauses = [float(str(e["in_seconds"])) for e in stranded.reconnects]
        assert len(pauses) >= 3, stranded.reconnects
        bounds = [
            min(link_module.BACKOFF_INITIAL * 2**k, link_module.BACKOFF_MAX)
            for k in range(len(pauses))
        ]
        assert all(p <= b + 0.005 for p, b in zip(pauses, bounds, strict=True)), pauses
        assert len(pauses) < 10, pauses
        assert all(_at(e) >= stranded.broker_stopped - 1 for e in stranded.reconnects)


def _recording(events: list[tuple[float, dict[str, object]]]) -> Processor:
    """A structlog processor keeping (monotonic time, event) and printing nothing."""

    def record(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        events.append((time.monotonic(), dict(event)))
        raise structlog.DropEvent

    return record


class _LongestJitter:
    """Stands in for :mod:`random` in the link: every pause is its whole delay."""

    @staticmethod
    def uniform(_low: float, high: float) -> float:
        return high


async def _until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class TestReconnectSchedule:
    """A real link dialling a stopped broker, with small constants and the longest pauses."""

    async def test_doubles_to_its_cap_and_starts_again_after_a_healthy_session(
        self, run_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """0.05, 0.1, 0.2, then 0.4 s (the cap); after a 1 s session, 0.05 and 0.1 again."""
        monkeypatch.setattr(link_module, "BACKOFF_INITIAL", 0.05)
        monkeypatch.setattr(link_module, "BACKOFF_MAX", 0.4)
        monkeypatch.setattr(link_module, "HEALTHY_SESSION", 1.0)
        monkeypatch.setattr(link_module, "random", _LongestJitter)
        ports = (
            *("--listen", f"127.0.0.1:{free_port()}"),
            *("--agent-listen", f"127.0.0.1:{free_port()}"),
        )
        broker = await asyncio.to_thread(BrokerProcess.start, run_dir, "broker-backoff", *ports)
        try:
            await asyncio.to_thread(broker.add_tenant, "backoff", "backoff.example")
            state = run_dir / "agent-backoff"
            await asyncio.to_thread(AgentProcess.enrol, broker, "backoff", state)
            await asyncio.to_thread(broker.stop)
            identity = AgentIdentity.load(state)
            events: list[tuple[float, dict[str, object]]] = []
            structlog.configure(processors=[_recording(events)])
            link = Link(
                identity,
                Validator(identity, lambda _domain: None, replay=ReplayGuard()),
                domains=(),
                max_in_flight=1,
            )

            def pauses() -> list[float]:
                return [float(str(e["in_seconds"])) for _, e in events if e["event"] == _PAUSE]

            task = asyncio.create_task(link.run())
            try:
                await _until(lambda: len(pauses()) >= 6)
                assert pauses()[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]
                _assert_waited(events)
                broker = await asyncio.to_thread(
                    BrokerProcess.start, run_dir, "broker-backoff", *ports
                )
                await asyncio.wait_for(link.connected.wait(), 30)
                await asyncio.sleep(1.5)  # Longer than HEALTHY_SESSION: a healthy session.
                before = len(pauses())
                await asyncio.to_thread(broker.stop)
                await _until(lambda: len(pauses()) >= before + 2)
                assert pauses()[before : before + 2] == [0.05, 0.1]
            finally:
                link.drain("test over")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await asyncio.to_thread(broker.stop)


_PAUSE = "link.reconnecting"


def _assert_waited(events: list[tuple[float, dict[str, object]]]) -> None:
    """Each announced pause was really waited before the next dial failed."""
    timeline = [(at, e) for at, e in events if e["event"] in {_PAUSE, "link.failed"}]
    for (at, event), (then, following) in itertools.pairwise(timeline):
        if event["event"] == _PAUSE and following["event"] == "link.failed":
            assert then - at >= float(str(event["in_seconds"])) - 0.01, (event, then - at)
