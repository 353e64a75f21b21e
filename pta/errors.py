"""The one error hierarchy, and the one place errors become gRPC statuses.

Every class carries its status code and a message that is safe to show the caller: it never
holds a password, an envelope, a key or a token.

    PtaError
    ├── InvalidRequest ......... INVALID_ARGUMENT
    ├── NotFound ............... NOT_FOUND
    ├── AlreadyExists .......... ALREADY_EXISTS
    ├── Unauthenticated ........ UNAUTHENTICATED
    ├── PermissionDenied ....... PERMISSION_DENIED
    │   └── TenantMismatch
    ├── Unavailable ............ UNAVAILABLE (a client may send it again, to any broker)
    │   ├── NoAgentAvailable
    │   ├── StoreUnavailable
    │   └── AgentMayHaveTried .. UNAVAILABLE, grpc-retry-pushback-ms -1 (not again by itself)
    │       └── DirectoryUnavailable
    ├── Overloaded ............. RESOURCE_EXHAUSTED
    ├── DeadlineExceeded ....... DEADLINE_EXCEEDED
    ├── FailedPrecondition ..... FAILED_PRECONDITION (not in the state it needs to be in)
    ├── ChallengeExpired ....... FAILED_PRECONDITION
    ├── StoreTooNew ............ FAILED_PRECONDITION (broker side: refused at open)
    └── EnvelopeRejected ....... INVALID_ARGUMENT (agent side: never reaches the directory)

An error an agent may already have acted on (it had the request, and may have tried the
password at its directory) says so (:attr:`PtaError.may_have_been_tried`): its status then
carries ``grpc-retry-pushback-ms: -1``, which tells a gRPC client's retry policy not to send the
request again by itself (``pta/failover.py``); a second try could count one password twice
against the directory's lockout.

Programming errors are ordinary ``RuntimeError``/``TypeError`` and are never mapped: the
caller sees INTERNAL and the log has the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, ClassVar, Final

import grpc
import structlog

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = structlog.get_logger()
#: Trailing metadata that tells a gRPC client's retry policy not to retry the call (gRFC A6:
#: a negative server pushback means "do not retry"); sent with every error an agent may
#: already have acted on.
NO_RETRY: Final[tuple[tuple[str, str], ...]] = (("grpc-retry-pushback-ms", "-1"),)


class PtaError(Exception):
    """An expected failure with a definite gRPC status and a caller-safe message."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    #: Whether an agent may already have tried the request at its directory: then no client
    #: may send it again by itself (the status carries :data:`NO_RETRY`).
    may_have_been_tried: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        """Keep the message: it is what the caller will read."""
        super().__init__(message)
        self.message = message


class InvalidRequest(PtaError):
    """The request itself is malformed; retrying it unchanged cannot help."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PtaError):
    """Something the request names does not exist (a domain no tenant owns)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(PtaError):
    """What the request would create exists (an authenticator enrolled): it says how to replace."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(PtaError):
    """The system is not in the state the request needs (no MFA key, no CA claimed yet)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(PtaError):
    """The caller did not prove who it is (bad token, no or invalid certificate)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(PtaError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class TenantMismatch(PermissionDenied):
    """One tenant's identity tried to act on another tenant's data."""


class Unavailable(PtaError):
    """No definite answer now; the same request may succeed later, here or at another broker.

    Unless it says an agent may have tried it (:class:`AgentMayHaveTried`), a client's retry
    policy may send it again at once, to another broker.
    """

    code = grpc.StatusCode.UNAVAILABLE


class NoAgentAvailable(Unavailable):
    """No agent of the tenant that serves the domain is connected."""


class AgentMayHaveTried(Unavailable):
    """No answer, but an agent had the request and may have tried the password already.

    The user may sign in again (the lockout then decides); a client must not resend it by
    itself, or one password could count twice against the directory's lockout.
    """

    may_have_been_tried = True


class DirectoryUnavailable(AgentMayHaveTried):
    """The agent could not reach its directory: says nothing about the password.

    It may have lost the directory in the middle of a bind, so it is not resent by itself.
    """


class StoreUnavailable(Unavailable):
    """The broker's shared store (PostgreSQL) did not answer: nothing can be decided now.

    ``message`` is what a caller may read and names nothing of the deployment; ``detail`` says
    where and why for the broker's log and the operator's terminal, never a password.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        """Keep the caller's message and the operator's detail apart."""
        super().__init__(message)
        self.detail = detail


class Overloaded(PtaError):
    """A bounded queue is full: refused at once rather than left to time out."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(PtaError):
    """The sign-in's deadline passed before an agent answered."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ChallengeExpired(PtaError):
    """An MFA challenge is unknown, expired or used up: the sign-in must start again."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class StoreTooNew(PtaError):
    """The store's schema is newer than this program knows: it must not read or write it.

    A newer broker migrated the store; an older one would misread what it does not know.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION


class EnvelopeRejected(PtaError):
    """A sealed envelope did not open: forged, truncated, replayed, expired or not ours."""

    code = grpc.StatusCode.INVALID_ARGUMENT


@contextlib.asynccontextmanager
async def rpc_errors(context: grpc.aio.ServicerContext[object, object]) -> AsyncIterator[None]:
    """Answer a ``PtaError`` with its status, anything unexpected with INTERNAL.

    Abort and cancellation pass through untouched: grpcio says an ``AbortError`` must not be
    suppressed, and a swallowed cancellation would leave the call hanging.

    Args:
        context: The servicer context of the RPC being handled.

    Yields:
        Nothing; the handler's body runs inside.
    """
    try:
        yield
    except (grpc.aio.AbortError, asyncio.CancelledError):
        raise
    except PtaError as error:
        await _abort(context, error)
    except ExceptionGroup as group:
        # A task group (a stream's reader and writer) failed: answer with its first
        # expected error, or INTERNAL when it holds only unexpected ones.
        expected = _first(group)
        if expected is None:
            log.exception("rpc.internal_error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        else:
            await _abort(context, expected)
    except Exception:
        log.exception("rpc.internal_error")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")


async def _abort(context: grpc.aio.ServicerContext[object, object], error: PtaError) -> None:
    """Answer ``error``: its status and message, and :data:`NO_RETRY` when it says so."""
    trailers = NO_RETRY if error.may_have_been_tried else ()
    await context.abort(error.code, error.message, trailing_metadata=trailers)


def _first(group: BaseExceptionGroup[BaseException]) -> PtaError | None:
    for error in group.exceptions:
        if isinstance(error, PtaError):
            return error
        if isinstance(error, BaseExceptionGroup) and (found := _first(error)) is not None:
            return found
    return None
