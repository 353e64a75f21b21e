"""A whole check (``Dispatcher.check``): when it commits, and what a lost one says at the end.

What a client may resend depends on it (``pta/failover.py``): a check no agent took is plain
UNAVAILABLE (resent to another broker), one an agent may have tried stays :class:`AgentLost`
whatever happens after, and the caller hears ``dispatching`` exactly before an agent can.
"""

from __future__ import annotations

import asyncio

import pytest

from broker.dispatch import checks
from broker.dispatch.dispatcher import Dispatcher
from broker.dispatch.jobs import AgentLost
from pta.errors import NoAgentAvailable
from tests.broker.dispatch.helpers import ANSWER, DOMAIN, TENANT, make_conn, taken

BUDGET = 5.0


class TestCheck:
    """Seal, commit, queue, wait; send on after a lost agent."""

    async def test_dispatching_comes_before_the_agent_has_it(self) -> None:
        """``dispatching`` is awaited once, while no connection holds the job yet."""
        dispatcher = Dispatcher()
        conn = make_conn("a")
        dispatcher.attach(conn)
        seen: list[int] = []

        async def dispatching() -> None:
            seen.append(len(conn.in_flight))

        check = asyncio.create_task(
            checks.check(
                dispatcher, TENANT, DOMAIN, "r1", b"creds", BUDGET, dispatching=dispatching
            )
        )
        await taken(conn)
        assert seen == [0]
        assert dispatcher.complete(conn, "r1", ANSWER)
        assert await check == ANSWER
        assert seen == [0]

    async def test_no_agent_is_refused_before_dispatching(self) -> None:
        """No agent for the domain: NoAgentAvailable, and nothing committed."""
        dispatcher = Dispatcher()
        seen: list[str] = []

        async def dispatching() -> None:
            seen.append("dispatching")

        with pytest.raises(NoAgentAvailable):
            await checks.check(
                dispatcher, TENANT, DOMAIN, "r1", b"creds", BUDGET, dispatching=dispatching
            )
        assert seen == []

    @pytest.mark.parametrize("readmitted", [False, True], ids=["not-readmitted", "no-agent-left"])
    async def test_lost_stays_lost(self, *, readmitted: bool) -> None:
        """The agent dies after taking it: AgentLost, also when the try sent on finds no agent.

        Sent on (the lockout has room) with no other agent connected, the check must not
        end as NoAgentAvailable: a client would resend that one to another broker.
        """
        dispatcher = Dispatcher()
        conn = make_conn("a")
        dispatcher.attach(conn)
        asked: list[float] = []

        async def readmit(deadline: float) -> bool:
            asked.append(deadline)
            return readmitted

        check = asyncio.create_task(
            checks.check(dispatcher, TENANT, DOMAIN, "r1", b"creds", BUDGET, readmit=readmit)
        )
        (await taken(conn)).written = True  # The stream handed it to the agent.
        dispatcher.detach(conn)
        with pytest.raises(AgentLost) as lost:
            await check
        assert len(asked) == 1
        assert lost.value.may_have_been_tried
        assert isinstance(lost.value.__cause__, NoAgentAvailable) is readmitted

    async def test_lost_then_another_agent_answers(self) -> None:
        """Sent on to another agent of the tenant, the check gets that agent's answer."""
        dispatcher = Dispatcher()
        first, second = make_conn("a"), make_conn("b")
        dispatcher.attach(first)
        dispatcher.attach(second)

        async def readmit(_deadline: float) -> bool:
            return True

        check = asyncio.create_task(
            checks.check(dispatcher, TENANT, DOMAIN, "r1", b"creds", BUDGET, readmit=readmit)
        )
        (await taken(first)).written = True
        dispatcher.detach(first)
        await taken(second)
        assert dispatcher.complete(second, "r1", ANSWER)
        assert await check == ANSWER
