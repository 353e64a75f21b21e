"""The benchmark's load: direct LDAP binds (the baseline) and end-to-end sign-ins.

Each end-to-end load process runs its own event loop and gRPC channel, waits for a common
start time, keeps ``concurrency`` sign-ins in flight until the end time, checks every answer
against the outcome it expects, and reports latencies and its own CPU time. Several processes
share the load when one would be the bottleneck.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import ldap3

from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Sequence

Outcome = outcome_pb2.Outcome
BAD_EVERY = 5  # One sign-in in five uses a wrong password.


@dataclass(frozen=True, slots=True)
class Case:
    """One sign-in to send and the outcome it must get."""

    uid: str
    password: str
    good: bool


@dataclass(slots=True)
class Sample:
    """What one load process (or the baseline loop) measured in the window."""

    latencies_ms: list[float] = field(default_factory=list)
    wrong: int = 0
    errors: int = 0
    cpu_seconds: float = 0.0


def cases(uids: Sequence[str], password_of: dict[str, str]) -> list[Case]:
    """The mix every phase sends: each user in turn, every fifth with a wrong password."""
    return [
        Case(
            uid,
            password_of[uid] if i % BAD_EVERY else "not-" + password_of[uid],
            bool(i % BAD_EVERY),
        )
        for i, uid in enumerate(uids)
    ]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def direct_binds(url: str, dn_of: dict[str, str], mix: list[Case], until: float) -> Sample:
    """The baseline: one ldap3 connection rebinding as each user, as fast as it answers."""
    server = ldap3.Server(url, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, authentication=ldap3.SIMPLE, raise_exceptions=False)
    conn.open(read_server_info=False)
    sample = Sample()
    cpu = _cpu()
    i = 0
    while time.time() < until:
        case = mix[i % len(mix)]
        i += 1
        conn.user, conn.password = dn_of[case.uid], case.password
        started = time.perf_counter()
        conn.bind(read_server_info=False)
        sample.latencies_ms.append((time.perf_counter() - started) * 1000)
        if ((conn.result or {}).get("result") == 0) != case.good:
            sample.wrong += 1
    sample.cpu_seconds = _cpu() - cpu
    conn.unbind()
    return sample


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    """What one end-to-end load process does (picklable: it crosses a process boundary)."""

    target: str
    ca: bytes
    domain: str
    mix: list[Case]
    concurrency: int
    start_at: float
    until: float


def end_to_end(spec: LoadSpec) -> Sample:
    """Keep ``concurrency`` sign-ins in flight from ``start_at`` to ``until`` (wall clock)."""
    return asyncio.run(_end_to_end(spec))


async def _end_to_end(spec: LoadSpec) -> Sample:
    target, ca, domain, mix = spec.target, spec.ca, spec.domain, spec.mix
    concurrency, start_at, until = spec.concurrency, spec.start_at, spec.until
    sample = Sample()
    async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
        stub = signin_pb2_grpc.SignInServiceStub(channel)
        requests = [
            (signin_pb2.SignInRequest(username=f"{c.uid}@{domain}", password=c.password), c.good)
            for c in mix
        ]
        await stub.SignIn(requests[0][0], timeout=10)  # Connect and warm up before the clock.
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu = _cpu()

        async def worker(offset: int) -> None:
            i = offset
            while time.time() < until:
                request, good = requests[i % len(requests)]
                i += concurrency
                started = time.perf_counter()
                try:
                    reply = await stub.SignIn(request, timeout=10)
                except grpc.aio.AioRpcError:
                    sample.errors += 1
                    continue
                sample.latencies_ms.append((time.perf_counter() - started) * 1000)
                expected = Outcome.SUCCESS if good else Outcome.INVALID_CREDENTIALS
                if reply.outcome != expected:
                    sample.wrong += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        sample.cpu_seconds = _cpu() - cpu
    return sample
