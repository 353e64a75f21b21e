"""The agent's links to every broker (``agent/mesh.py``), with links that dial nothing.

Each fake link is up or down as the test says, and records whether it was drained or stopped;
the mesh is driven by what brokers tell it, as a real link would pass it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

from agent import mesh as mesh_module
from agent.identity import AgentIdentity
from agent.mesh import Mesh
from pta import sealing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

SEED = "seed:7444"


class FakeLink:
    """A link that runs until drained or cancelled, up when the test says so."""

    def __init__(self, identity: AgentIdentity, endpoint: str) -> None:
        """Not up, not drained."""
        self.identity = identity
        self.endpoint = endpoint
        self.connected = asyncio.Event()
        self.drained: list[str] = []
        self.cancelled = False
        self._ended = asyncio.Event()

    def drain(self, reason: str) -> None:
        """Record the drain; the run ends (its broker closed the stream at once)."""
        self.drained.append(reason)
        self._ended.set()

    async def run(self) -> None:
        """Run until drained or cancelled."""
        try:
            await self._ended.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def _identity(serial: str = "1") -> AgentIdentity:
    return AgentIdentity(
        agent_id="agt-1",
        tenant="acme",
        broker="seed:7443",
        agent_endpoint=SEED,
        domains=(),
        ca_pem=b"",
        cert_pem=serial.encode(),
        tls_key_pem=b"",
        envelope_key=sealing.generate_key(),
    )


class Harness:
    """A mesh whose links are fakes, and every link it ever made."""

    def __init__(self, group: asyncio.TaskGroup, known: tuple[str, ...] = ()) -> None:
        """Start the mesh on the seed (and on ``known``, remembered from a last run)."""
        self.made: list[FakeLink] = []
        self.remembered: list[tuple[str, ...]] = []
        self.mesh = Mesh(
            _identity(), self._make, group, known=known, remember=self.remembered.append
        )
        self.mesh.start()

    def _make(self, identity: AgentIdentity, endpoint: str, mesh: Mesh) -> Any:
        assert mesh is self.mesh
        link = FakeLink(identity, endpoint)
        self.made.append(link)
        return link

    def link(self, endpoint: str) -> FakeLink:
        """The current link to ``endpoint``."""
        link: FakeLink = self.mesh.links[endpoint]  # type: ignore[assignment]
        return link

    def up(self, endpoint: str) -> None:
        """The link to ``endpoint`` was welcomed."""
        self.link(endpoint).connected.set()
        self.mesh.changed()

    def down(self, endpoint: str) -> None:
        """The link to ``endpoint`` lost its stream."""
        self.link(endpoint).connected.clear()
        self.mesh.changed()


@contextlib.asynccontextmanager
async def _running(known: tuple[str, ...] = ()) -> AsyncIterator[Harness]:
    """A mesh on the seed whose link tasks a task group owns; stopped at the end."""
    async with asyncio.TaskGroup() as group:
        harness = Harness(group, known)
        try:
            yield harness
        finally:
            harness.mesh.stop("test over")


async def _settle() -> None:
    """Let every task that can run do so (links start, hand-overs move on)."""
    await asyncio.sleep(0.01)


class TestWhichBrokers:
    """A link to each broker of the last list told; the seed while none is named or up."""

    async def test_seed_alone_until_told(self) -> None:
        """No broker named a cluster (SQLite, an older broker): one link, to the seed."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told(())  # An empty list says nothing.
            assert list(harness.mesh.links) == [SEED]

    async def test_one_link_per_broker_listed(self) -> None:
        """The seed names three brokers, itself among them: two more links."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told(("b:1", SEED, "c:1"))
            assert sorted(harness.mesh.links) == ["b:1", "c:1", SEED]
            assert len(harness.made) == 3

    async def test_seed_under_another_name_dropped_once_a_listed_link_is_up(self) -> None:
        """Listed by another name: the seed stays until a listed link is up, then drains."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told(("a:1", "b:1"))
            assert sorted(harness.mesh.links) == ["a:1", "b:1", SEED]
            seed = harness.link(SEED)
            harness.up("a:1")
            assert sorted(harness.mesh.links) == ["a:1", "b:1"]
            assert seed.drained == ["not among the cluster's brokers"]

    async def test_a_broker_that_left_is_drained_or_stopped(self) -> None:
        """Up: drained (it answers what it holds). Down: stopped at once (it may be dialling)."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told((SEED, "b:1", "c:1"))
            await _settle()  # Both dial (c:1 for ever: its broker is gone).
            harness.up("b:1")
            b, c = harness.link("b:1"), harness.link("c:1")
            harness.mesh.told((SEED,))
            await _settle()
            assert list(harness.mesh.links) == [SEED]
            assert b.drained == ["not among the cluster's brokers"]
            assert not b.cancelled
            assert c.cancelled

    async def test_the_others_kept_when_one_dies(self) -> None:
        """A link going down changes nothing else: it redials by itself."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told((SEED, "b:1"))
            harness.up("b:1")
            before = dict(harness.mesh.links)
            harness.down("b:1")
            assert harness.mesh.links == before
            assert not before[SEED].drained  # type: ignore[attr-defined]

    async def test_seed_dialled_again_when_no_listed_broker_is_up(self) -> None:
        """Every listed broker unreachable: the seed may know newer ones."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told(("a:1",))
            harness.up("a:1")
            assert list(harness.mesh.links) == ["a:1"]
            harness.down("a:1")
            assert sorted(harness.mesh.links) == ["a:1", SEED]

    async def test_each_list_remembered(self) -> None:
        """Every new list is kept for the next start (an empty one, or the same, is not)."""
        async with _running() as harness:
            harness.mesh.told((SEED, "b:1"))
            harness.mesh.told((SEED, "b:1"))
            harness.mesh.told(())
            assert harness.remembered == [(SEED, "b:1")]

    async def test_a_restart_dials_what_it_knew(self) -> None:
        """Remembered brokers and the seed; once one of them is up, the seed is dropped."""
        async with _running(known=("a:1", "b:1")) as harness:
            assert sorted(harness.mesh.links) == ["a:1", "b:1", SEED]
            harness.up("b:1")
            assert sorted(harness.mesh.links) == ["a:1", "b:1"]

    async def test_renew_where_a_link_is_up(self) -> None:
        """Where to renew: the brokers whose link is up first."""
        async with _running() as harness:
            harness.mesh.told((SEED, "b:1"))
            harness.up("b:1")
            assert harness.mesh.endpoints() == ["b:1", SEED]


class TestRotation:
    """A renewed identity: a new link to each broker, each old one drained once it is up."""

    async def test_make_before_break(self) -> None:
        """Old links drain only when their successors are up; a down one is ended at once."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told((SEED, "b:1", "c:1"))
            await _settle()
            harness.up("b:1")
            old = {e: harness.link(e) for e in (SEED, "b:1", "c:1")}
            renewed = dataclasses.replace(_identity(), cert_pem=b"2")
            rotating = asyncio.create_task(harness.mesh.rotate(renewed))
            await _settle()
            assert all(harness.link(e).identity is renewed for e in harness.mesh.links)
            assert old["c:1"].cancelled  # Down: nothing to hand over.
            assert not old[SEED].drained
            assert not old["b:1"].drained
            harness.up(SEED)
            await _settle()
            assert old[SEED].drained == ["certificate renewed"]
            assert not old["b:1"].drained
            harness.up("b:1")
            await rotating
            assert old["b:1"].drained == ["certificate renewed"]

    async def test_the_same_brokers_and_no_other(self) -> None:
        """A successor per broker linked, and no link to a seed the list does not name."""
        async with _running() as harness:
            harness.up(SEED)
            harness.mesh.told(("a:1", "b:1"))
            harness.up("a:1")
            harness.up("b:1")
            made = len(harness.made)
            rotating = asyncio.create_task(
                harness.mesh.rotate(dataclasses.replace(_identity(), cert_pem=b"2"))
            )
            await _settle()
            assert sorted(link.endpoint for link in harness.made[made:]) == ["a:1", "b:1"]
            harness.up("a:1")
            harness.up("b:1")
            await rotating
            assert sorted(harness.mesh.links) == ["a:1", "b:1"]

    async def test_a_successor_that_never_comes_up(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """After HANDOVER_TIMEOUT the old link drains anyway (its broker is likely gone)."""
        async with _running() as harness:
            monkeypatch.setattr(mesh_module, "HANDOVER_TIMEOUT", 0.01)
            harness.up(SEED)
            old = harness.link(SEED)
            await harness.mesh.rotate(dataclasses.replace(_identity(), cert_pem=b"2"))
            assert old.drained == ["certificate renewed"]

    async def test_stopping_ends_a_hand_over(self) -> None:
        """The agent stops during a rotation: the old links end at once, not after the timeout."""
        async with _running() as harness:
            harness.up(SEED)
            old = harness.link(SEED)
            rotating = asyncio.create_task(
                harness.mesh.rotate(dataclasses.replace(_identity(), cert_pem=b"2"))
            )
            await _settle()
            harness.mesh.stop("agent stopping")
            async with asyncio.timeout(1):
                await rotating
            assert old.drained == ["certificate renewed"]
            assert harness.mesh.links == {}
