"""The benchmark's load: direct LDAP binds (the baseline) and end-to-end sign-ins.

Each end-to-end load process runs its own event loop and gRPC channel, waits for a common
start time, keeps ``concurrency`` sign-ins in flight until the end time, checks every answer
against the outcome it expects, and reports latencies and its own CPU time. Several processes
share the load when one would be the bottleneck. The sign-ins go through one of two APIs:
``unary`` (a ``SignIn`` call each) or ``stream`` (one ``SignInStream`` per process, as a
front end multiplexing its users would hold, several sign-ins per message).
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import ldap3

from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tooling.echo import METHOD

if TYPE_CHECKING:
    from collections.abc import Sequence

Outcome = outcome_pb2.Outcome
BAD_EVERY = 5  # One sign-in in five uses a wrong password.
APIS = ("unary", "stream")
TIMEOUT = 10.0
WARM_UP_ID = 2**63


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


def direct_binds(
    url: str, dn_of: dict[str, str], mix: list[Case], start_at: float, until: float
) -> Sample:
    """The baseline: one ldap3 connection rebinding as each user, as fast as it answers.

    Only from ``start_at`` to ``until`` (wall clock), as :func:`end_to_end`: the bench divides
    the count by that window and reads slapd's CPU over it, so binds before it (while the
    phase settles, 1.5 s) would inflate the rate and shrink slapd's CPU per bind.
    """
    server = ldap3.Server(url, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, authentication=ldap3.SIMPLE, raise_exceptions=False)
    conn.open(read_server_info=False)
    time.sleep(max(0.0, start_at - time.time()))
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
    api: str = "unary"


def end_to_end(spec: LoadSpec) -> Sample:
    """Keep ``concurrency`` sign-ins in flight from ``start_at`` to ``until`` (wall clock)."""
    return asyncio.run(_end_to_end_stream(spec) if spec.api == "stream" else _end_to_end(spec))


def _expected(good: bool) -> int:  # noqa: FBT001 - the case's own flag
    return Outcome.SUCCESS if good else Outcome.INVALID_CREDENTIALS


async def _end_to_end_stream(spec: LoadSpec) -> Sample:
    """As :func:`_end_to_end`, over one ``SignInStream``: refill as answers come back."""
    requests = [
        (
            signin_pb2.SignInRequest(username=f"{c.uid}@{spec.domain}", password=c.password),
            c.good,
        )
        for c in spec.mix
    ]
    async with grpc.aio.secure_channel(
        spec.target, grpc.ssl_channel_credentials(spec.ca)
    ) as channel:
        stub = signin_pb2_grpc.SignInServiceStub(channel)
        await stub.SignIn(requests[0][0], timeout=TIMEOUT)  # Connect and warm up.
        load = _StreamLoad(stub.SignInStream(), requests, spec)
        warm = signin_pb2.SignInItem(id=WARM_UP_ID, request=requests[0][0])
        await load.call.write(signin_pb2.SignInBatch(items=[warm]))
        await load.call.read()
        await asyncio.sleep(max(0.0, spec.start_at - time.time()))
        cpu = _cpu()
        async with asyncio.TaskGroup() as group:
            writer = group.create_task(load.write())
            try:
                await load.read()
            except grpc.aio.AioRpcError:
                writer.cancel()
        load.sample.errors += len(load.waiting)  # Never answered: the stream ended early.
        load.sample.cpu_seconds = _cpu() - cpu
    return load.sample


class _StreamLoad:
    """One stream's writer (fills the free slots, one message) and reader (checks answers)."""

    def __init__(
        self,
        call: Any,
        requests: list[tuple[signin_pb2.SignInRequest, bool]],
        spec: LoadSpec,
    ) -> None:
        self.call = call
        self.requests = requests
        self.spec = spec
        self.sample = Sample()
        #: id -> (when sent, whether the password is right)
        self.waiting: dict[int, tuple[float, bool]] = {}
        self.room = asyncio.Event()

    async def write(self) -> None:
        next_id = 0
        while time.time() < self.spec.until:
            free = self.spec.concurrency - len(self.waiting)
            if free <= 0:
                self.room.clear()
                await self.room.wait()
                continue
            items = []
            now = time.perf_counter()
            for _ in range(free):
                request, good = self.requests[next_id % len(self.requests)]
                self.waiting[next_id] = (now, good)
                items.append(
                    signin_pb2.SignInItem(
                        id=next_id, request=request, timeout_ms=int(TIMEOUT * 1000)
                    )
                )
                next_id += 1
            try:
                await self.call.write(signin_pb2.SignInBatch(items=items))
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # The stream ended: what it lost counts as errors.
        await self.call.done_writing()

    async def read(self) -> None:
        while (message := await self.call.read()) is not grpc.aio.EOF:
            now = time.perf_counter()
            for answer in message.answers:
                started, good = self.waiting.pop(answer.id)
                if answer.WhichOneof("result") != "response":
                    self.sample.errors += 1
                    continue
                self.sample.latencies_ms.append((now - started) * 1000)
                if answer.response.outcome != _expected(good):
                    self.sample.wrong += 1
            self.room.set()


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
        await stub.SignIn(requests[0][0], timeout=TIMEOUT)  # Connect and warm up first.
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu = _cpu()

        async def worker(offset: int) -> None:
            i = offset
            while time.time() < until:
                request, good = requests[i % len(requests)]
                i += concurrency
                started = time.perf_counter()
                try:
                    reply = await stub.SignIn(request, timeout=TIMEOUT)
                except grpc.aio.AioRpcError:
                    sample.errors += 1
                    continue
                sample.latencies_ms.append((time.perf_counter() - started) * 1000)
                if reply.outcome != _expected(good):
                    sample.wrong += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        sample.cpu_seconds = _cpu() - cpu
    return sample


#: What an echo round trip carries: the size of a typical SignInRequest.
ECHO_PAYLOAD = bytes(64)


def echo_round_trips(target: str, ca: bytes, start_at: float, until: float) -> Sample:
    """One bare grpc.aio unary round trip at a time to the echo server (tooling/echo.py)."""
    return asyncio.run(_echo_round_trips(target, ca, start_at, until))


async def _echo_round_trips(target: str, ca: bytes, start_at: float, until: float) -> Sample:
    sample = Sample()
    async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
        echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            METHOD
        )  # Bytes both ways: no serialisation at all.
        await echo(ECHO_PAYLOAD, timeout=TIMEOUT)  # Connect and warm up first.
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu = _cpu()
        while time.time() < until:
            started = time.perf_counter()
            try:
                answer = await echo(ECHO_PAYLOAD, timeout=TIMEOUT)
            except grpc.aio.AioRpcError:
                sample.errors += 1
                continue
            sample.latencies_ms.append((time.perf_counter() - started) * 1000)
            if answer != ECHO_PAYLOAD:
                sample.wrong += 1
        sample.cpu_seconds = _cpu() - cpu
    return sample
