"""The agent's one limit on checks at once, shared by its streams (``agent/capacity.py``)."""

from __future__ import annotations

import asyncio

import pytest

from agent.capacity import Capacity


async def _hold(capacity: Capacity, count: int, held: list[int], release: asyncio.Event) -> None:
    """Hold ``count`` slots until ``release``; record ``count`` once they are held."""
    async with capacity.hold(count):
        held.append(count)
        await release.wait()


async def _settle() -> None:
    await asyncio.sleep(0.01)


class TestCapacity:
    """Batches from every stream take their slots from one count."""

    async def test_a_batch_waits_for_room(self) -> None:
        """3 of 4 held: a batch of 2 waits; it goes once they are given back."""
        capacity, held, release = Capacity(4), list[int](), asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(_hold(capacity, 3, held, release))
            await _settle()
            second = asyncio.Event()
            group.create_task(_hold(capacity, 2, held, second))
            await _settle()
            assert held == [3]
            assert capacity.used == 3
            release.set()
            await _settle()
            assert held == [3, 2]
            assert capacity.used == 2
            second.set()
        assert capacity.used == 0

    async def test_a_batch_larger_than_the_limit_runs_alone(self) -> None:
        """A batch of more than the limit takes all of it (it never waits for ever)."""
        capacity, held, release = Capacity(4), list[int](), asyncio.Event()
        release.set()
        await _hold(capacity, 9, held, release)
        assert held == [9]
        assert capacity.used == 0

    async def test_all_or_nothing(self) -> None:
        """Two batches of 3 of a limit of 4: one runs, the other waits whole (no deadlock)."""
        capacity, held, release = Capacity(4), list[int](), asyncio.Event()
        async with asyncio.TaskGroup() as group:
            for _ in range(2):
                group.create_task(_hold(capacity, 3, held, release))
            await _settle()
            assert held == [3]
            assert capacity.used == 3
            release.set()
        assert held == [3, 3]
        assert capacity.used == 0

    async def test_cancelled_while_waiting_takes_nothing(self) -> None:
        """A batch cancelled before it got its slots (its stream ended) leaves none taken."""
        capacity, held, release = Capacity(1), list[int](), asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(_hold(capacity, 1, held, release))
            waiting = group.create_task(_hold(capacity, 1, held, release))
            await _settle()
            waiting.cancel()
            await _settle()
            release.set()
        assert held == [1]
        assert capacity.used == 0

    def test_limit_must_be_positive(self) -> None:
        """No slot at all would hold every check for ever."""
        with pytest.raises(ValueError, match="at least 1"):
            Capacity(0)
