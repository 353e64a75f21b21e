"""Fake connections and jobs for the dispatcher tests: real futures, a clock moved by hand."""

from __future__ import annotations

import asyncio

import pytest

from broker.dispatch.dispatcher import Dispatcher
from broker.dispatch.jobs import Answer, Connection, Job
from pta import sealing

TENANT = "acme"
OTHER_TENANT = "globex"
DOMAIN = "example.com"
NOW = 1000.0
LATER = NOW + 30.0
ENVELOPE_KEY = sealing.generate_key().public_key()
ANSWER = Answer(outcome=1, message="ok", agent_id="agent-a")


class FakeClock:
    """Event-loop time that moves only when a test says so."""

    def __init__(self, now: float = NOW) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now


def make_conn(
    connection_id: str,
    *,
    tenant: str = TENANT,
    domains: tuple[str, ...] = (DOMAIN,),
    capacity: int = 1,
) -> Connection:
    """Build a connection of ``tenant`` serving ``domains``."""
    return Connection(
        connection_id=connection_id,
        agent_id=f"agent-{connection_id}",
        tenant=tenant,
        domains=frozenset(domains),
        capacity=capacity,
        envelope_key=ENVELOPE_KEY,
    )


def make_job(
    request_id: str,
    *targets: Connection,
    tenant: str = TENANT,
    domain: str = DOMAIN,
    deadline: float = LATER,
) -> Job:
    """Build a job with one (fake) envelope per target connection."""
    return Job(
        request_id=request_id,
        tenant=tenant,
        domain=domain,
        deadline=deadline,
        deadline_unix_ms=int(deadline * 1000),
        envelopes={c.connection_id: f"sealed:{c.connection_id}".encode() for c in targets},
        future=asyncio.get_running_loop().create_future(),
    )


def sent(conn: Connection) -> list[str]:
    """Empty a connection's outbox and return the request ids it held, in order."""
    ids = []
    while not conn.outbox.empty():
        job = conn.outbox.get_nowait()
        assert isinstance(job, Job)  # The dispatcher queues jobs only (brokers: the server).
        ids.append(job.request_id)
    return ids


def failure(job: Job) -> BaseException | None:
    """Return the exception a job's future was failed with (retrieving it)."""
    assert job.future.done()
    return job.future.exception()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at :data:`NOW`."""
    return FakeClock()


@pytest.fixture
def dispatcher(clock: FakeClock) -> Dispatcher:
    """A dispatcher with a small queue limit on the fake clock."""
    return Dispatcher(queue_limit=2, clock=clock)


async def taken(conn: Connection) -> Job:
    """The next job the connection's stream would write to its agent (within a second)."""
    async with asyncio.timeout(1):
        job = await conn.outbox.get()
    assert isinstance(job, Job)
    return job
