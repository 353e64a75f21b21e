"""gRPC plumbing shared by the programs: service registration, message limits, channel options.

Services are registered from their descriptors rather than with the generated
``add_*_to_server`` helpers, for one reason: a request that does not parse (invalid UTF-8 in a
string field, a truncated message) must be answered INVALID_ARGUMENT with a clear message, not
the opaque status grpcio gives when a deserializer raises.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc
from google.protobuf import message as pb_message
from google.protobuf import message_factory

from pta.errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from google.protobuf.descriptor import ServiceDescriptor

#: Both ends of an agent's stream, when the other side still has earlier work in progress,
#: wait this long for more before writing, so that one stream message carries several: each
#: message costs both sides a system call and wake-ups. Idle, they write at once.
COALESCE_SECONDS: Final = 0.001


_Item = TypeVar("_Item")


class StreamEnded(Exception):
    """The other side closed the stream, or went silent: ends the stream's task group."""


async def next_batch(
    outbox: asyncio.Queue[_Item], heartbeat: float, more_coming: Callable[[], bool]
) -> list[_Item] | None:
    """What a stream's writer sends next: every item waiting, or None for a heartbeat.

    Both ends of an agent's stream write the same way: wait for the first item; while the other
    side still works on earlier ones (``more_coming``, asked once the first is taken), wait
    :data:`COALESCE_SECONDS` for more to join it; then take everything waiting. None when
    ``heartbeat`` seconds pass with nothing to send: the writer sends a heartbeat instead.
    """
    try:
        async with asyncio.timeout(heartbeat):
            first = await outbox.get()
    except TimeoutError:
        return None
    if more_coming():
        await asyncio.sleep(COALESCE_SECONDS)
    batch = [first]
    while not outbox.empty():
        batch.append(outbox.get_nowait())
    return batch


#: Every sign-in, enrolment and renewal message is small: the public endpoint refuses larger
#: ones (RESOURCE_EXHAUSTED) before parsing them.
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Stream messages carry batches of envelopes or results.
MAX_STREAM_MESSAGE_BYTES: Final = 4 * 1024 * 1024

#: Keepalive that survives idle NATs and load balancers without tripping grpc's
#: ``too_many_pings`` rule: clients ping every 30 s, servers accept pings every 10 s.
SERVER_OPTIONS: Final[list[tuple[str, Any]]] = [
    ("grpc.max_receive_message_length", MAX_STREAM_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_STREAM_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]
#: The public endpoint: the same, with the small message cap.
PUBLIC_SERVER_OPTIONS: Final[list[tuple[str, Any]]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    *(option for option in SERVER_OPTIONS if option[0] != "grpc.max_receive_message_length"),
]
CHANNEL_OPTIONS: Final[list[tuple[str, Any]]] = [
    ("grpc.max_receive_message_length", MAX_STREAM_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_STREAM_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class Malformed:
    """Stands in for a request that did not parse, so the handler can answer it properly."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        """Keep the parser's reason (it names the field problem, never the field's value)."""
        self.reason = reason


def _lenient(cls: type[pb_message.Message]) -> Callable[[bytes], pb_message.Message | Malformed]:
    def deserialize(data: bytes) -> pb_message.Message | Malformed:
        try:
            return cls.FromString(data)
        except pb_message.DecodeError as error:
            return Malformed(str(error).rpartition(": ")[2] or "malformed message")

    return deserialize


def _malformed(request: object) -> InvalidRequest | None:
    if isinstance(request, Malformed):
        return InvalidRequest(f"request does not parse: {request.reason}")
    return None


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if (error := _malformed(request)) is not None:
            await context.abort(error.code, error.message)
        return await behavior(request, context)

    return handler


async def checked_stream(requests: AsyncIterator[object]) -> AsyncIterator[Any]:
    """Pass a request stream through, raising ``InvalidRequest`` at the first malformed one.

    Raises:
        InvalidRequest: At a message that did not parse.
    """
    async for request in requests:
        if (error := _malformed(request)) is not None:
            raise error
        yield request


def _streaming_in(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    # A coroutine function, so that grpc.aio runs it as one (streams are written with
    # context.write, never by yielding).
    async def handler(
        requests: AsyncIterator[object], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        return await behavior(checked_stream(requests), context)

    return handler


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Serve every method of ``service`` from the same-named method of ``servicer``."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        behavior = getattr(servicer, method.name)
        kwargs: dict[str, Any] = {
            "request_deserializer": _lenient(request_cls),
            "response_serializer": response_cls.SerializeToString,
        }
        match method.client_streaming, method.server_streaming:
            case False, False:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                    _unary(behavior), **kwargs
                )
            case False, True:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
            case True, False:
                handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                    _streaming_in(behavior), **kwargs
                )
            case True, True:
                handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                    _streaming_in(behavior), **kwargs
                )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
