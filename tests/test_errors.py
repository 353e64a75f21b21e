"""``pta/errors.py``: every expected error reaches a real gRPC caller as its status, nothing more.

A real ``grpc.aio`` server on a loopback port runs each handler inside ``rpc_errors``; the
client reads the status and details a caller would. Unexpected errors become INTERNAL with a
fixed text: their message (which could hold anything) never leaves the process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import pytest
import structlog

from pta import errors
from pta.errors import rpc_errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

#: What each error class answers, as the module's docstring promises.
CODES: dict[type[errors.PtaError], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.TenantMismatch: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.NoAgentAvailable: grpc.StatusCode.UNAVAILABLE,
    errors.AgentMayHaveTried: grpc.StatusCode.UNAVAILABLE,
    errors.DirectoryUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.StoreTooNew: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ChallengeExpired: grpc.StatusCode.FAILED_PRECONDITION,
    errors.EnvelopeRejected: grpc.StatusCode.INVALID_ARGUMENT,
}
#: Text an unexpected error carries that must not reach the caller.
LEAK = "internal detail: dn=cn=svc,dc=example,dc=com"


class Harness:
    """A real aio server whose one method raises what the test sets, inside ``rpc_errors``."""

    def __init__(self) -> None:
        """Nothing raised until told."""
        self.raise_: Callable[[], None] = lambda: None

    async def handle(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Echo the request, unless the test's raiser raises first."""
        async with rpc_errors(context):
            self.raise_()
            return request


#: The harness and the method that calls it.
Call: TypeAlias = "tuple[Harness, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]"


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    """A harness, and the channel method that calls it over loopback."""
    harness = Harness()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Errors", {"Call": grpc.unary_unary_rpc_method_handler(harness.handle)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield harness, channel.unary_unary("/test.Errors/Call")
    finally:
        await channel.close()
        await server.stop(None)


async def status_of(call: Call, error: BaseException) -> tuple[grpc.StatusCode, str]:
    """Call once with the handler raising ``error``; the status and details received."""
    harness, method = call

    def raise_() -> None:
        raise error

    harness.raise_ = raise_
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(b"x", timeout=5)
    return caught.value.code(), caught.value.details() or ""


class TestRpcErrors:
    """The one place errors become statuses."""

    @pytest.mark.parametrize("kind", list(CODES), ids=lambda k: k.__name__)
    async def test_each_error_answers_its_status(
        self,
        call: Call,
        kind: type[errors.PtaError],
    ) -> None:
        """Its code and its message, as the caller reads them."""
        assert kind.code == CODES[kind]
        assert await status_of(call, kind("a caller-safe sentence")) == (
            CODES[kind],
            "a caller-safe sentence",
        )

    @pytest.mark.parametrize("kind", list(CODES), ids=lambda k: k.__name__)
    async def test_no_retry_when_an_agent_may_have_tried(
        self, call: Call, kind: type[errors.PtaError]
    ) -> None:
        """Only what an agent may have tried carries the pushback that stops gRPC's retry."""
        harness, method = call

        def raise_() -> None:
            raise kind("a caller-safe sentence")

        harness.raise_ = raise_
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(b"x", timeout=5)
        trailers = caught.value.trailing_metadata()
        pushback = trailers is not None and trailers.get("grpc-retry-pushback-ms") == "-1"
        tried = {errors.AgentMayHaveTried, errors.DirectoryUnavailable}
        assert pushback is (kind in tried) is kind.may_have_been_tried

    async def test_unexpected_error_is_internal_and_says_nothing(self, call: Call) -> None:
        """A programming error: INTERNAL with a fixed text; the detail only in the log."""
        with structlog.testing.capture_logs() as logs:
            assert await status_of(call, RuntimeError(LEAK)) == (
                grpc.StatusCode.INTERNAL,
                "internal error",
            )
        assert [e["event"] for e in logs] == ["rpc.internal_error"]

    async def test_a_task_groups_first_expected_error_answers(self, call: Call) -> None:
        """A stream's reader and writer failing together: the nested expected error wins."""
        group = ExceptionGroup(
            "stream",
            [RuntimeError(LEAK), ExceptionGroup("inner", [errors.Overloaded("too many")])],
        )
        assert await status_of(call, group) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many")

    async def test_a_group_of_unexpected_errors_is_internal(self, call: Call) -> None:
        """Nothing expected in the group: INTERNAL, and none of their text."""
        group = ExceptionGroup("stream", [RuntimeError(LEAK), ValueError(LEAK)])
        assert await status_of(call, group) == (grpc.StatusCode.INTERNAL, "internal error")

    async def test_success_passes_through(self, call: Call) -> None:
        """No error: the handler's answer."""
        _, method = call
        assert await method(b"echo", timeout=5) == b"echo"

    async def test_cancellation_is_not_swallowed(self) -> None:
        """A cancelled handler stays cancelled: swallowing it would leave the call hanging."""

        class Context:
            async def abort(self, code: grpc.StatusCode, details: str) -> None:
                raise AssertionError(f"aborted {code} {details}")

        async def handler() -> None:
            async with rpc_errors(Context()):  # type: ignore[arg-type]
                await asyncio.sleep(10)

        task = asyncio.create_task(handler())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
