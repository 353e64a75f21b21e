"""``pta/rpc.py``: the writer shape both ends of an agent's stream share.

Pure asyncio (queues and timeouts on the real loop); what the stream ends do with a batch is
tested end to end in ``tests/broker/api`` and ``tests/agent/test_link.py``.
"""

from __future__ import annotations

import asyncio

from pta import rpc


class TestNextBatch:
    """Everything waiting goes in one message; nothing for a while is a heartbeat."""

    async def test_idle_is_a_heartbeat(self) -> None:
        """Nothing within the heartbeat interval: None, the caller writes a heartbeat."""
        outbox: asyncio.Queue[int] = asyncio.Queue()
        assert await rpc.next_batch(outbox, 0.01, lambda: False) is None

    async def test_everything_waiting_goes_together(self) -> None:
        """Items queued before the writer looks leave in one batch, in order."""
        outbox: asyncio.Queue[int] = asyncio.Queue()
        for n in range(5):
            outbox.put_nowait(n)
        assert await rpc.next_batch(outbox, 1.0, lambda: False) == [0, 1, 2, 3, 4]
        assert outbox.empty()

    async def test_idle_writes_at_once(self) -> None:
        """With no more coming, the first item is not held back for company."""
        outbox: asyncio.Queue[int] = asyncio.Queue()
        writer = asyncio.create_task(rpc.next_batch(outbox, 1.0, lambda: False))
        await asyncio.sleep(0)
        outbox.put_nowait(1)
        assert await writer == [1]

    async def test_more_coming_waits_for_company(self) -> None:
        """While the other side works on earlier items, items arriving just after join."""
        outbox: asyncio.Queue[int] = asyncio.Queue()
        asked: list[int] = []

        def more_coming() -> bool:
            asked.append(outbox.qsize())  # Asked once the first item is taken.
            return True

        outbox.put_nowait(1)
        writer = asyncio.create_task(rpc.next_batch(outbox, 1.0, more_coming))
        await asyncio.sleep(0)
        outbox.put_nowait(2)  # Arrives during the coalescing wait.
        assert await writer == [1, 2]
        assert asked == [0]
