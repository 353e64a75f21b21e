"""``SignInService/SignInStream``: many sign-ins over one long-lived stream, each answered alone.

A session reads messages of items and runs each item as its own task through the very same
sign-in as the unary call (``SignInService.sign_in``: rate limit, tenant, policy, sealing,
dispatch, one audit event), then writes answers as they complete: every answer ready when the
writer gets to run goes in one message, and none is held back to fill one. Nothing one item
does ends the stream: its failure is its own status. What ends a stream early is a message the
broker will not read (it does not parse, or carries too many items) and a broker shutting down;
either way the items already read are answered first.

One TaskGroup owns the reader, the writer and every item's task, so a client that cancels the
stream cancels them all, and nothing outlives the call.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, Protocol

import grpc
import structlog

from pta.errors import DeadlineExceeded, InvalidRequest, Overloaded, PtaError, Unavailable
from pta.v1 import signin_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

log = structlog.get_logger()

#: Items one message may carry; a larger message ends the stream (INVALID_ARGUMENT).
MAX_ITEMS_PER_MESSAGE: Final = 256
#: Items one stream may have in flight; more are answered RESOURCE_EXHAUSTED at once.
MAX_IN_FLIGHT: Final = 256
#: Answers one message carries at most (the rest go in the next).
MAX_ANSWERS_PER_MESSAGE: Final = 256
#: Answers waiting to be written past which the broker reads nothing more from the stream
#: until the client has taken some: a client that sends and never reads holds only this much.
MAX_UNSENT: Final = MAX_IN_FLIGHT
#: A stream with nothing in flight that sends nothing for this long is ended UNAVAILABLE
#: ("open a new one"): an idle stream still holds a task, buffers and a slot of its address.
DEFAULT_IDLE_SECONDS: Final = 300.0
#: An item's own path ends at its deadline (the policy's wait and the dispatch both run
#: under it); this late, something is wrong, and the item is answered anyway.
OVERRUN_SECONDS: Final = 1.0


class SignIn(Protocol):
    """``SignInService.sign_in``: one sign-in, a response or a ``PtaError``."""

    def __call__(
        self, request: signin_pb2.SignInRequest, *, peer: str, deadline: float
    ) -> Awaitable[signin_pb2.SignInResponse]:
        """Answer ``request`` from ``peer`` by ``deadline`` (event-loop time)."""


def status_answer(item_id: int, code: grpc.StatusCode, message: str) -> signin_pb2.SignInAnswer:
    """An answer that is a status: ``code`` as its number, as google.rpc.Status has it."""
    number: int = code.value[0]
    return signin_pb2.SignInAnswer(
        id=item_id, status=signin_pb2.Status(code=number, message=message)
    )


class SignInStreamSession:
    """One SignInStream call: its reader, its writer, its items in flight."""

    def __init__(
        self,
        sign_in: SignIn,
        *,
        peer: str,
        timeout: float,
        stream_remaining: float | None,
        idle: float = DEFAULT_IDLE_SECONDS,
    ) -> None:
        """Prepare a session (call it from the stream's handler).

        Args:
            sign_in: Runs one item.
            peer: The caller's address as grpc names it.
            timeout: The broker's sign-in timeout: no item waits longer.
            stream_remaining: Seconds left of the stream's own deadline (None: none).
            idle: Seconds a stream with nothing in flight may send nothing before it is ended.
        """
        self._sign_in = sign_in
        self._idle = idle
        self._idled = False
        self._watchdog: asyncio.Task[None] | None = None
        self._last_active = asyncio.get_running_loop().time()
        self._peer = peer
        self._timeout = timeout
        now = asyncio.get_running_loop().time()
        self._stream_deadline = None if stream_remaining is None else now + stream_remaining
        self._in_flight: set[int] = set()
        self._unsent: list[signin_pb2.SignInAnswer] = []
        self._wake = asyncio.Event()  # For the writer: answers ready, or reading ended.
        self._room = asyncio.Event()  # For the reader: the writer took answers.
        self._reading = True
        self._writing = False  # A write is under way: the client has not taken it yet.
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False
        self._cut = False
        self._refusal: PtaError | None = None
        self._items = 0
        self._refused = 0

    def stop_reading(self) -> None:
        """Read nothing more: answer what was read, then end the stream UNAVAILABLE.

        UNAVAILABLE ("send again what has no answer") only when reading was really cut short:
        a client that had half-closed already got an answer to everything it sent.
        """
        self._stopped = True
        self._cut = self._reading
        if self._reader is not None:
            self._reader.cancel()  # Its own task: the stream goes on without it.

    async def run(
        self,
        requests: AsyncIterator[signin_pb2.SignInBatch],
        write: Callable[[signin_pb2.SignInAnswers], Awaitable[None]],
    ) -> None:
        """Serve the stream until the client half-closes and every item is answered.

        Raises:
            InvalidRequest: A message did not parse or carried too many items (raised once
                the items read before it are answered).
            Unavailable: The broker is shutting down (likewise).
        """
        started = time.perf_counter()
        end = "cancelled"
        try:
            async with asyncio.TaskGroup() as group:
                if self._stopped:  # The broker was closing before this stream began.
                    self._reading = False
                    self._wake.set()
                else:
                    self._reader = group.create_task(self._read(requests, group))
                    # Also when it is cancelled before its first step: then no finally runs.
                    self._reader.add_done_callback(lambda _: self._read_ended())
                    self._watchdog = group.create_task(self._watch_idle())
                group.create_task(self._write(write))
            if self._refusal is not None:
                end = self._refusal.code.name
                raise self._refusal
            if self._cut:
                end = "UNAVAILABLE"
                raise Unavailable("the broker is shutting down: send what has no answer again")
            if self._idled:
                end = "UNAVAILABLE"
                raise Unavailable(
                    f"nothing was sent for {self._idle:g} s: open a new stream for new sign-ins "
                    "(and send again anything without an answer)"
                )
            end = "OK"
        finally:
            log.info(
                "signin_stream.closed",
                peer=self._peer,
                items=self._items,
                refused_at_once=self._refused,
                status=end,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def _read(
        self, requests: AsyncIterator[signin_pb2.SignInBatch], group: asyncio.TaskGroup
    ) -> None:
        try:
            async for batch in requests:
                self._active()
                self._admit(batch, group)
                while len(self._unsent) >= MAX_UNSENT:
                    self._room.clear()
                    await self._room.wait()
        except InvalidRequest as error:  # A message the broker will not read: stop reading.
            self._refusal = error
        finally:
            self._read_ended()

    def _read_ended(self) -> None:
        """Reading is over: the writer finishes once the items in flight are answered."""
        if not self._reading:
            return
        self._reading = False
        self._wake.set()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _active(self) -> None:
        self._last_active = asyncio.get_running_loop().time()

    async def _watch_idle(self) -> None:
        """End reading once the stream has been idle for its idle time (its reader's twin).

        Idle means nothing in flight and nothing to write or being written, and nothing read
        or written for that long: a client waiting for its answers is not idle, however long
        it sends nothing, nor is one that has not yet taken the answers written to it.
        Reading ends as at a shutdown (the reader is cancelled), without the overhead of a
        clock around every read.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self._last_active + self._idle - loop.time()))
            if self._last_active + self._idle > loop.time():
                continue  # Something happened meanwhile.
            if self._in_flight or self._unsent or self._writing:
                self._active()  # Busy: the clock starts again once the answers are out.
                continue
            self._idled = True
            if self._reader is not None:
                self._reader.cancel()
            return

    def _admit(self, batch: signin_pb2.SignInBatch, group: asyncio.TaskGroup) -> None:
        """Start each item of ``batch``, or answer it at once when a limit refuses it.

        Raises:
            InvalidRequest: The message carries too many items, or an id already in flight (or
                twice): none of its items is started. A second answer under a live id would
                settle the wrong sign-in at a client that matches answers by id.
        """
        if len(batch.items) > MAX_ITEMS_PER_MESSAGE:
            raise InvalidRequest(f"a message may carry at most {MAX_ITEMS_PER_MESSAGE} sign-ins")
        ids = [item.id for item in batch.items]
        if len(set(ids)) != len(ids) or not self._in_flight.isdisjoint(ids):
            raise InvalidRequest("an id is already in flight on this stream")
        now = asyncio.get_running_loop().time()
        for item in batch.items:
            self._items += 1
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                self._refuse(
                    item.id,
                    Overloaded(f"more than {MAX_IN_FLIGHT} sign-ins in flight on this stream"),
                )
            else:
                self._in_flight.add(item.id)
                deadline = self._deadline(now, item.timeout_ms)
                group.create_task(self._one(item.id, item.request, deadline))

    def _deadline(self, now: float, timeout_ms: int) -> float:
        budget = min(self._timeout, timeout_ms / 1000) if timeout_ms else self._timeout
        deadline = now + budget
        if self._stream_deadline is not None:
            deadline = min(deadline, self._stream_deadline)
        return deadline

    def _refuse(self, item_id: int, error: PtaError) -> None:
        self._refused += 1
        self._ready(status_answer(item_id, error.code, error.message))

    def _ready(self, answer: signin_pb2.SignInAnswer) -> None:
        self._unsent.append(answer)
        self._wake.set()
        self._active()

    async def _one(self, item_id: int, request: signin_pb2.SignInRequest, deadline: float) -> None:
        """Run one item and queue its one answer; only cancellation escapes."""
        try:
            async with asyncio.timeout_at(deadline + OVERRUN_SECONDS):
                response = await self._sign_in(request, peer=self._peer, deadline=deadline)
            answer = signin_pb2.SignInAnswer(id=item_id, response=response)
        except PtaError as error:
            answer = status_answer(item_id, error.code, error.message)
        except TimeoutError:
            log.exception("signin_stream.item_overran", peer=self._peer)
            late = DeadlineExceeded("no answer before the deadline")
            answer = status_answer(item_id, late.code, late.message)
        except Exception:  # A bug: this item's INTERNAL, never the end of everyone's stream.
            log.exception("rpc.internal_error")
            answer = status_answer(item_id, grpc.StatusCode.INTERNAL, "internal error")
        self._in_flight.discard(item_id)
        self._ready(answer)

    async def _write(self, write: Callable[[signin_pb2.SignInAnswers], Awaitable[None]]) -> None:
        while True:
            if self._unsent:
                answers = self._unsent[:MAX_ANSWERS_PER_MESSAGE]
                del self._unsent[:MAX_ANSWERS_PER_MESSAGE]
                self._room.set()
                self._writing = True  # (A write that fails ends the stream: no finally.)
                await write(signin_pb2.SignInAnswers(answers=answers))
                self._writing = False
                self._active()  # The client took them: its idle time starts now.
            elif self._reading or self._in_flight:
                self._wake.clear()
                await self._wake.wait()
            else:
                return
