"""Sign-ins of one user waiting their turn at the lockout gate, and waking them.

The gate lets only as many checks of a user run at once as may still fail before the lockout
comes down (:mod:`broker.policy.lockout_gate`); the others wait here until a check of that
user is answered, then decide again.
"""

from __future__ import annotations

import asyncio

from pta.errors import DeadlineExceeded, Overloaded

#: Sign-ins of one user waiting their turn; more are refused (each wake-up wakes them all).
MAX_WAITING_PER_USER = 32


class UserTurns:
    """The waiters of each (tenant, user), woken all at once."""

    def __init__(self) -> None:
        """Nobody waits."""
        self.waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}

    async def wait(self, key: tuple[str, str], deadline: float, poll: float | None) -> None:
        """Wait until a check of the user ``key`` (tenant, user) is answered.

        ``poll``: with a shared ledger, a check answered at another broker wakes nobody
        here: the wait then ends every ``poll`` seconds, to decide again.

        Raises:
            DeadlineExceeded: When ``deadline`` (event-loop time) passes first.
            Overloaded: When too many wait for this user already.
        """
        waiters = self.waiters.setdefault(key, [])
        if len(waiters) >= MAX_WAITING_PER_USER:
            raise Overloaded("too many sign-ins of this user at once; try again")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters.append(waiter)
        until = deadline if poll is None else min(deadline, loop.time() + poll)
        try:
            async with asyncio.timeout_at(until):
                await waiter
        except TimeoutError:
            if until >= deadline:
                raise DeadlineExceeded("earlier sign-ins of this user took too long") from None
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters and self.waiters.get(key) is waiters:
                del self.waiters[key]

    def wake(self, tenant: str, user: str) -> None:
        """Let the checks of a user that wait for their turn decide again."""
        for waiter in self.waiters.pop((tenant, user), ()):
            if not waiter.done():
                waiter.set_result(None)
