"""Agents attach to every broker: a broker joins, one stops, one dies, certificates renew.

Real processes throughout: PostgreSQL, brokers joined as an operator joins them (the first
one's CA copied), agents over real mutual TLS checking passwords in slapd. Each delay the docs
quote is measured here from the processes' own log timestamps, and printed.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from broker.cluster import STALE_AFTER, TICK
from pta.v1 import outcome_pb2
from tests.cluster import at, connected_at, join, start_cluster, streams
from tests.conftest import USERS
from tests.raw_agent import RawStream, enrolled
from tests.support import AgentProcess, BrokerProcess, SignInLoad, agent_credentials, wait_for
from tooling.postgres import Postgres, postgres_missing_reason

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

REASON = postgres_missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
Outcome = outcome_pb2.Outcome
TENANT, DOMAIN = "mesh", "mesh.example"
#: A tenant for a stream driven by hand: no sign-in is ever sent to it.
RAW_TENANT = "meshraw"
#: A new broker is attached to within this: a tick for the others to read it, then a dial.
ATTACH_BOUND = 2.0
#: A broker stopped cleanly is dropped within this: it deregisters, the others say so.
STOP_BOUND = 2.0
#: A killed broker is dropped once its heartbeat is stale, and a tick or two later.
KILL_BOUND = STALE_AFTER + 2.0
#: Renewal: agent certificates live this long, so several renewals fall in one load.
AGENT_LIFETIME, LOAD_SECONDS = "4s", 10.0


@dataclass
class Pair:
    """Two brokers of one cluster, and the agents attached to both."""

    brokers: list[BrokerProcess]
    agents: list[AgentProcess] = field(default_factory=list)

    def attached_everywhere(self, agent: AgentProcess) -> bool:
        """Whether every broker of the pair holds a stream of ``agent``."""
        return all(connected_at(b, agent) for b in self.brokers)

    def start_agents(self, slapd: Slapd, tenant: str, names: list[str]) -> None:
        """Enrol and run an agent per name at the first broker; wait until it is at both."""
        for name in names:
            self.agents.append(AgentProcess.start(self.brokers[0], slapd, tenant, name))
        for agent in self.agents:
            wait_for(lambda a=agent: self.attached_everywhere(a), what="agents at both")

    def stop(self) -> None:
        """Stop every agent, then the brokers."""
        for agent in self.agents:
            agent.stop()
        for broker in self.brokers:
            broker.stop()


@pytest.fixture(scope="module")
def pair(postgres: Postgres, run_dir: Path, slapd: Slapd) -> Iterator[Pair]:
    """Two brokers on one database, two agents enrolled at the first and attached to both."""
    found = Pair(start_cluster(run_dir, ["mesh-1", "mesh-2"], postgres.new_database("mesh")))
    try:
        found.brokers[0].add_tenant(TENANT, DOMAIN)
        found.brokers[0].add_tenant(RAW_TENANT, "meshraw.example")
        found.start_agents(slapd, TENANT, ["mesh-agent-0", "mesh-agent-1"])
        yield found
    finally:
        found.stop()


def _extra(pair: Pair, run_dir: Path, name: str) -> BrokerProcess:
    """A third broker joined to the pair, once every agent holds a stream to it."""
    extra = join(run_dir, name, pair.brokers[0])
    try:
        for agent in pair.agents:
            wait_for(lambda a=agent: connected_at(extra, a), timeout=10, what=f"{name} attached")
    except BaseException:
        extra.stop()
        raise
    return extra


def _dropped(agent: AgentProcess, endpoint: str, since: float) -> float:
    """When ``agent`` dropped its link to ``endpoint`` after ``since`` (waits for it)."""

    def drops() -> list[float]:
        return [
            at(e)
            for e in agent.log_events("mesh.dropping")
            if e.get("broker") == endpoint and at(e) >= since
        ]

    wait_for(drops, timeout=KILL_BOUND + 5, what=f"{agent.agent_id} to drop {endpoint}")
    return min(drops())


def _show(what: str, delays: list[float], when: str) -> None:
    """Print a measured figure (the docs quote it)."""
    print(f"\nmesh: {what} {[round(d, 3) for d in delays]} s {when}")  # noqa: T201


def _held(pair: Pair) -> dict[str, dict[str, str]]:
    """The streams each broker of the pair holds: broker name -> connection id -> agent id."""
    return {b.data_dir.name: streams(b) for b in pair.brokers}


class TestWire:
    """What a broker of a cluster tells an agent, as a stream driven by hand reads it."""

    def test_welcome_names_the_cluster_and_changes_are_pushed(
        self, pair: Pair, run_dir: Path
    ) -> None:
        """The Welcome lists both brokers; a joining and a stopping broker each push a list."""
        state = run_dir / "mesh-raw"
        agent_id = enrolled(pair.brokers[0], RAW_TENANT, state)
        raw = RawStream(pair.brokers[0], agent_credentials(state))
        try:
            raw.hello(agent_id)
            wait_for(lambda: raw.welcomed, what="the welcome")
            welcome = next(m.welcome for m in raw.received if m.HasField("welcome"))
            assert sorted(welcome.brokers) == sorted(b.agent for b in pair.brokers)
            extra = join(run_dir, "mesh-wire", pair.brokers[0])
            try:
                everyone = sorted([*welcome.brokers, extra.agent])
                wait_for(lambda: _pushed(raw) == everyone, timeout=5, what="the new list")
            finally:
                extra.stop()
            wait_for(lambda: _pushed(raw) == sorted(welcome.brokers), timeout=5, what="the list")
        finally:
            raw.close()


def _pushed(raw: RawStream) -> list[str]:
    """The last list of brokers pushed on a stream (empty: none yet)."""
    pushed = [m.brokers.agent_endpoints for m in raw.received if m.HasField("brokers")]
    return sorted(pushed[-1]) if pushed else []


class TestBrokersComeAndGo:
    """Agents follow the cluster: attach to a broker that joins, drop one that leaves."""

    def test_a_new_broker_is_attached_to(self, pair: Pair, run_dir: Path) -> None:
        """A broker joins: every agent attaches to it within ATTACH_BOUND, and it signs in."""
        extra = _extra(pair, run_dir, "mesh-3")
        try:
            serving = at(extra.log_events("broker.serving")[-1])
            delays = [
                min(at(e) for e in extra.log_events("agent.connected") if e["agent_id"] == a)
                - serving
                for a in (agent.agent_id for agent in pair.agents)
            ]
            _show("attached to a new broker", delays, "after it served")
            assert max(delays) < ATTACH_BOUND
            reply = extra.sign_in(f"alice@{DOMAIN}", USERS["alice"])
            assert reply.outcome == Outcome.SUCCESS
        finally:
            extra.stop()

    def test_a_stopped_broker_is_dropped_and_the_others_kept(
        self, pair: Pair, run_dir: Path
    ) -> None:
        """SIGTERM: it deregisters, each agent drains its link there, and keeps the others."""
        extra = _extra(pair, run_dir, "mesh-4")
        before = _held(pair)
        extra.process.terminate()
        stopped = time.time()
        assert extra.process.wait(20) == 0
        delays = [_dropped(agent, extra.agent, stopped) - stopped for agent in pair.agents]
        _show("dropped a stopped broker", delays, "after SIGTERM")
        assert max(delays) < STOP_BOUND
        assert _held(pair) == before, "the streams to the other brokers were kept as they were"

    def test_a_killed_broker_is_dropped_once_stale(self, pair: Pair, run_dir: Path) -> None:
        """SIGKILL: each agent redials it until its heartbeat is stale, then drops it."""
        extra = _extra(pair, run_dir, "mesh-5")
        before = _held(pair)
        extra.process.kill()
        killed = time.time()
        extra.process.wait(10)
        delays = [_dropped(agent, extra.agent, killed) - killed for agent in pair.agents]
        _show("dropped a killed broker", delays, "after SIGKILL")
        assert min(delays) >= STALE_AFTER - 1.0 - TICK  # Its last heartbeat was up to 1 s old.
        assert max(delays) < KILL_BOUND
        assert _held(pair) == before
        for broker in pair.brokers:
            assert broker.sign_in(f"alice@{DOMAIN}", USERS["alice"]).outcome == Outcome.SUCCESS


class TestAlone:
    """A broker on its own SQLite store names no cluster: its agent keeps one stream, as ever."""

    def test_one_stream_to_the_one_broker(self, broker: BrokerProcess, agent: AgentProcess) -> None:
        """No list in any welcome, one link (the seed), and no heartbeat in the store."""
        assert agent.log_events("link.connected")
        assert all(e["brokers"] == [] for e in agent.log_events("link.connected"))
        assert {e["broker"] for e in agent.log_events("mesh.attaching")} == {broker.agent}
        assert not agent.log_events("mesh.brokers")
        assert not broker.log_events("cluster.brokers_changed")


@pytest.fixture(scope="module")
def rotating(postgres: Postgres, run_dir: Path, slapd: Slapd) -> Iterator[Pair]:
    """Two brokers whose agent certificates live 4 s, and one agent attached to both."""
    brokers = start_cluster(
        run_dir,
        ["mesh-rot-1", "mesh-rot-2"],
        postgres.new_database("mesh_rotating"),
        "--agent-cert-lifetime",
        AGENT_LIFETIME,
    )
    found = Pair(brokers)
    try:
        brokers[0].add_tenant("meshrot", "meshrot.example")
        found.start_agents(slapd, "meshrot", ["mesh-rot-agent"])
        yield found
    finally:
        found.stop()


class TestRenewal:
    """An agent attached to two brokers renews once per rotation, and no sign-in fails."""

    def test_no_sign_in_lost_across_renewals(self, rotating: Pair) -> None:
        """Sign-ins through both brokers across several renewals: none failed."""
        agent = rotating.agents[0]
        loads = [SignInLoad(b, "meshrot.example", LOAD_SECONDS) for b in rotating.brokers]
        with concurrent.futures.ThreadPoolExecutor(len(loads)) as pool:
            for future in [pool.submit(load.run_threads, 2) for load in loads]:
                future.result()
        renewals = [
            e
            for b in rotating.brokers
            for e in b.log_events("agent.renewed")
            if e["agent_id"] == agent.agent_id
        ]
        rotations = agent.log_events("agent.rotated")
        where = {b.data_dir.name: len(b.log_events("agent.renewed")) for b in rotating.brokers}
        answered = sum(load.answered for load in loads)
        failures = [f for load in loads for f in load.failures]
        print(  # noqa: T201 - the figure the docs quote
            f"\nmesh renewal: {answered} sign-ins, {len(failures)} failed, {len(renewals)}"
            f" renewals (by broker {where}), {len(rotations)} rotations of both links"
        )
        assert failures == []
        assert answered > 100
        assert len(renewals) >= 2
        # Once per rotation, at one broker: not once per link.
        assert len(rotations) <= len(renewals) <= len(rotations) + 1
        assert all(e["brokers"] == len(rotating.brokers) for e in rotations)
        wait_for(lambda: rotating.attached_everywhere(agent), what="the newest links at both")
