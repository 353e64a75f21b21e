"""A broker's place in its cluster (``broker/cluster.py``), without a network.

The membership runs against a real store (SQLite implements the cluster's table too), or
against one in memory with a clock the test moves and an outage it switches on. What the
agent stream's writer makes of an announcement: ``tests/broker/api/test_agent_stream_acks.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from broker import cluster
from broker.cluster import HEARTBEAT_INTERVAL, STALE_AFTER, Membership, dialable
from broker.config import BrokerConfig
from broker.store import open_store
from broker.store.records import BrokerRecord
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from broker.store.protocols import Store

ME = "127.0.0.1:7444"


@dataclass
class Clock:
    """Wall-clock time the test moves."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        """The time now."""
        return self.now


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def _member(store: Any, clock: Clock, broker_id: str = "b-me", endpoint: str = ME) -> Membership:
    return Membership(
        store,
        broker_id=broker_id,
        agent_endpoint=endpoint,
        public_endpoint="127.0.0.1:7443",
        clock=clock,
    )


def _other(store: Store, broker_id: str, endpoint: str, heartbeat_at: float) -> None:
    store.register_broker(BrokerRecord(broker_id, endpoint, "x:1", heartbeat_at, heartbeat_at))


class TestMembership:
    """Registered, refreshed every second, and the set of fresh brokers read every tick."""

    def test_join_registers_and_reads_the_fresh_set(self, store: Store) -> None:
        """Itself and every broker heard from within STALE_AFTER, sorted; not the stale one.

        The store judges freshness by the real clock: the others' heartbeats are real times.
        """
        now = time.time()
        _other(store, "b-fresh", "10.0.0.2:7444", now - 1)
        _other(store, "b-stale", "10.0.0.3:7444", now - STALE_AFTER - 1)
        member = _member(store, Clock(now))
        member.join()
        assert member.endpoints == ("10.0.0.2:7444", ME)
        assert [b.broker_id for b in store.brokers(fresh_within=STALE_AFTER)] == [
            "b-fresh",
            "b-me",
        ]

    def test_heartbeat_once_a_second(self) -> None:
        """Between heartbeats only the set is read; a second on, the heartbeat is written."""
        store, clock = RecordingStore(), Clock()
        member = _member(store, clock)
        member.join()
        clock.now += HEARTBEAT_INTERVAL / 2
        member.join()
        clock.now += HEARTBEAT_INTERVAL / 2
        member.join()
        assert [r.heartbeat_at for r in store.registered] == [1_000_000.0, 1_000_001.0]
        assert store.reads == 3

    def test_itself_always_in_the_set(self) -> None:
        """A store that lists others but not it (its write was lost): it is in the set anyway."""
        store = RecordingStore(listed=[BrokerRecord("b-2", "h:2", "x:1", 0, 0)])
        member = _member(store, Clock())
        member.join()
        assert member.endpoints == tuple(sorted({ME, "h:2"}))

    def test_store_down_keeps_the_set_and_says_so_once(self) -> None:
        """StoreUnavailable: the last set stands, one warning per outage, tried again."""
        store, clock = RecordingStore(listed=[BrokerRecord("b-2", "h:2", "x:1", 0, 0)]), Clock()
        member = _member(store, clock)
        member.join()
        known = member.endpoints
        store.down = True
        with capture_logs() as logs:
            for _ in range(3):
                clock.now += HEARTBEAT_INTERVAL
                member.join()
        assert member.endpoints == known
        assert [e["event"] for e in logs] == ["cluster.store_unavailable"]
        store.down = False
        clock.now += HEARTBEAT_INTERVAL
        member.join()
        assert store.registered[-1].heartbeat_at == clock.now  # At its first chance.

    def test_after_an_outage_nobody_is_dropped_until_stale(self) -> None:
        """Back from an outage: the others' heartbeats are old; they count for STALE_AFTER more.

        A broker that joined meanwhile is added at once.
        """
        store, clock = RecordingStore(listed=[BrokerRecord("b-2", "h:2", "x:1", 0, 0)]), Clock()
        member = _member(store, clock)
        member.join()
        store.down = True
        clock.now += 30
        member.join()
        store.down, store.listed = False, [BrokerRecord("b-3", "h:3", "x:1", 0, 0)]
        clock.now += HEARTBEAT_INTERVAL
        member.join()
        assert set(member.endpoints) == {ME, "h:2", "h:3"}
        clock.now += STALE_AFTER
        member.join()
        assert set(member.endpoints) == {ME, "h:3"}

    def test_leave_deregisters_and_tolerates_a_store_down(self) -> None:
        """A clean stop deregisters; with the store down it says so and goes on."""
        store = RecordingStore()
        _member(store, Clock()).leave()
        assert store.deregistered == ["b-me"]
        store.down = True
        with capture_logs() as logs:
            _member(store, Clock()).leave()
        assert [e["event"] for e in logs] == ["cluster.deregister_failed"]

    async def test_run_announces_each_change_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The set is read every tick; only a change is announced."""
        monkeypatch.setattr(cluster, "TICK", 0.001)
        store = RecordingStore()
        member = _member(store, Clock())
        member.join()
        announced: list[tuple[str, ...]] = []
        task = asyncio.create_task(member.run(announced.append))
        try:
            await _until(lambda: store.reads > 3)
            store.listed = [BrokerRecord("b-2", "h:2", "x:1", 0, 0)]
            await _until(lambda: len(announced) == 1)
            reads = store.reads
            await _until(lambda: store.reads > reads + 3)
            store.listed = []
            await _until(lambda: len(announced) == 2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert [set(a) for a in announced] == [{ME, "h:2"}, {ME}]


async def _until(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


@dataclass
class RecordingStore:
    """A cluster store in memory that records its calls and can be down."""

    listed: list[BrokerRecord] = field(default_factory=list)
    down: bool = False
    registered: list[BrokerRecord] = field(default_factory=list)
    deregistered: list[str] = field(default_factory=list)
    reads: int = 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the broker's store does not answer", detail="test")

    def register_broker(self, record: BrokerRecord) -> None:
        """Record a heartbeat."""
        self._check()
        self.registered.append(record)

    def brokers(self, *, fresh_within: float) -> list[BrokerRecord]:
        """The brokers the test lists."""
        assert fresh_within == STALE_AFTER
        self._check()
        self.reads += 1
        return list(self.listed)

    def deregister_broker(self, broker_id: str) -> None:
        """Record a deregistration."""
        self._check()
        self.deregistered.append(broker_id)


class TestDialable:
    """Where agents are told to dial a broker."""

    @pytest.mark.parametrize(
        ("listen", "given", "names", "expected"),
        [
            ("10.0.0.5:0", "", (), "10.0.0.5:7444"),
            ("0.0.0.0:7444", "", ("broker-1.example.net",), "broker-1.example.net:7444"),
            ("[::]:7444", "", ("b.example",), "b.example:7444"),
            ("0.0.0.0:7444", "lb.example.net:443", ("b.example",), "lb.example.net:443"),
        ],
        ids=["bound-host", "wildcard-san", "ipv6-wildcard-san", "given-wins"],
    )
    def test_endpoint(self, listen: str, given: str, names: tuple[str, ...], expected: str) -> None:
        """The bound host and real port; a wildcard names the first --san; --agent-endpoint wins."""
        assert dialable(listen, 7444, given=given, names=names) == expected

    def test_wildcard_without_names_is_this_host(self) -> None:
        """No --san: this host's name."""
        assert dialable("0.0.0.0:7444", 7444) == f"{socket.getfqdn()}:7444"

    def test_alone_on_sqlite(self, store: Store, tmp_path: Path) -> None:
        """A store of its own: no membership, nothing registered."""
        config = BrokerConfig(data_dir=tmp_path)
        assert cluster.membership(store, config, "b", public_port=1, agent_port=2) is None
        assert store.brokers(fresh_within=STALE_AFTER) == []
