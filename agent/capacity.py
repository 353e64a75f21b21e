"""How many validations the agent runs at once, over every stream it holds.

Each stream's hello tells its broker ``max_in_flight``, and each broker keeps to it; an agent
attached to several brokers could still be sent that many by each. Every stream's batches
therefore take their checks from one :class:`Capacity`: beyond the agent's limit a batch waits
here, before any bind, and the directories' pools see no more than one broker would send.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Capacity:
    """Slots for checks shared by every stream; a batch takes as many as it has requests."""

    def __init__(self, limit: int) -> None:
        """Allow ``limit`` checks at once.

        Raises:
            ValueError: When ``limit`` is not positive.
        """
        if limit < 1:
            raise ValueError("the capacity must be at least 1")
        self.limit = limit
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.asynccontextmanager
    async def hold(self, count: int) -> AsyncIterator[None]:
        """Hold ``count`` slots (at most the limit) for the body, waiting until they are free.

        All of a batch's slots are taken at once, never some of them while waiting for the
        rest: two batches each holding part could otherwise wait for each other for ever.
        """
        count = min(count, self.limit)
        while self.used + count > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self.used += count
        try:
            yield
        finally:
            self.used -= count
            for waiter in self._waiters:  # Each looks again: the first that fits goes.
                if not waiter.done():
                    waiter.set_result(None)
