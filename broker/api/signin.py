"""``pta.v1.SignInService``: the contract's side of a sign-in; the work is the use case's.

Each call's request becomes one :meth:`broker.signin_flow.SignInFlow.run` (credentials and the
caller in, request id and verdict out) and its result the response; the one place errors
become statuses is :func:`pta.errors.rpc_errors`. ``SignInStream`` carries many sign-ins over
one call (``broker/api/signin_stream.py``); each of them takes the same path as ``SignIn``. The
password lives in the request only until the flow seals it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

import structlog

from broker.api.signin_stream import DEFAULT_IDLE_SECONDS, SignInStreamSession
from broker.metrics import OFF
from broker.policy.ratelimit import RateLimiter, client_address, peer_address
from broker.signin_flow import SignInFlow, elapsed_ms, outcome_name, parse_client_ip
from pta.errors import (
    Overloaded,
    PtaError,
    rpc_errors,
)
from pta.names import check_password
from pta.v1 import agent_pb2, outcome_pb2, signin_pb2, signin_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from ipaddress import IPv4Network, IPv6Network

    import grpc

    from broker.dispatch.dispatcher import Dispatcher
    from broker.metrics import Counts
    from broker.policy.signin_policy import SignInPolicy, Verdict
    from broker.store.protocols import Store

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome
MAX_CLIENT_IP_CHARS = 64
#: SignInStreams one address may hold open at once (a front end needs one per process).
DEFAULT_STREAMS_PER_ADDRESS = 32
#: SignInStreams the broker holds open at once, from everyone.
MAX_STREAMS = 4096


class SignInService(signin_pb2_grpc.SignInServiceServicer):
    """Validates sign-ins through the tenant's agents."""

    def __init__(  # noqa: PLR0913 - wiring
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        policy: SignInPolicy,
        timeout: float,
        limiter: RateLimiter | None = None,
        trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = (),
        stream_idle: float = DEFAULT_IDLE_SECONDS,
        streams_per_address: int = DEFAULT_STREAMS_PER_ADDRESS,
        metrics: Counts = OFF,
    ) -> None:
        """Wire the service to the state store and the dispatcher.

        Args:
            store: Where domains are mapped to tenants.
            dispatcher: Where sealed jobs go to agents.
            policy: Lockout before a check; MFA and tokens after it.
            timeout: The longest a sign-in may take; a client deadline may shorten it.
            limiter: Per-address rate limit (none when omitted).
            trusted_proxies: Callers whose ``client_ip`` is believed by the rate limit.
            stream_idle: Seconds a SignInStream with nothing in flight may send nothing.
            streams_per_address: SignInStreams one caller address may hold open at once.
            metrics: Where sign-ins are counted (nothing, unless ``--metrics-listen``).
        """
        self._trusted = trusted_proxies
        self._policy = policy
        self._flow = SignInFlow(
            store=store,
            dispatcher=dispatcher,
            policy=policy,
            limiter=limiter,
            trusted_proxies=trusted_proxies,
            metrics=metrics,
        )
        self._timeout = timeout
        self._streams: set[SignInStreamSession] = set()
        self._stream_idle = stream_idle
        self._streams_per_address = streams_per_address
        #: Open SignInStreams per caller address (the connection's, never a claimed client_ip).
        self._streams_of: dict[str, int] = {}
        self._closing = False

    async def SignIn(  # noqa: N802 - the contract's name
        self,
        request: signin_pb2.SignInRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> signin_pb2.SignInResponse:
        """Answer one sign-in (see the module docstring)."""
        async with rpc_errors(context):
            return await self.sign_in(
                request,
                peer=context.peer(),
                deadline=self._deadline(context.time_remaining()),
                dispatching=_committing(context),
            )

    async def SignInStream(  # noqa: N802 - the contract's name
        self,
        requests: AsyncIterator[signin_pb2.SignInBatch],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Answer the sign-ins of a stream, each as :meth:`SignIn` would (see the proto).

        Streams are bounded like everything else a caller can hold: so many per address and
        in all (RESOURCE_EXHAUSTED at once past either), and an idle one is ended.
        """
        async with rpc_errors(context):
            address = peer_address(context.peer())
            if self._streams_of.get(address, 0) >= self._streams_per_address:
                raise Overloaded(
                    f"at most {self._streams_per_address} SignInStreams per address: "
                    "send more sign-ins on the ones open"
                )
            if len(self._streams) >= MAX_STREAMS:
                raise Overloaded("too many SignInStreams open: try again later")
            session = SignInStreamSession(
                functools.partial(self.sign_in, api="signin_stream"),
                peer=context.peer(),
                timeout=self._timeout,
                stream_remaining=context.time_remaining(),
                idle=self._stream_idle,
            )
            self._streams.add(session)
            self._streams_of[address] = self._streams_of.get(address, 0) + 1
            if self._closing:
                session.stop_reading()
            try:
                await session.run(requests, context.write)
            finally:
                self._streams.discard(session)
                if (left := self._streams_of[address] - 1) > 0:
                    self._streams_of[address] = left
                else:
                    del self._streams_of[address]

    def close_streams(self) -> None:
        """Stop reading every open sign-in stream: the broker is shutting down.

        Each stream answers the items it has read and then ends with UNAVAILABLE.
        """
        self._closing = True
        for session in self._streams:
            session.stop_reading()

    async def sign_in(
        self,
        request: signin_pb2.SignInRequest,
        *,
        peer: str,
        deadline: float,
        dispatching: Callable[[], Awaitable[None]] | None = None,
        api: str = "signin",
    ) -> signin_pb2.SignInResponse:
        """One sign-in, whichever call carried it.

        Args:
            request: What the client sent.
            peer: The caller's address as grpc names it (``ipv4:1.2.3.4:5``).
            deadline: Event-loop time by which it must be answered.
            dispatching: Awaited just before the password goes to an agent (SignIn commits
                its call then; a stream's items are never resent by grpc anyway).
            api: The call that carried it, for the metrics (signin, signin_stream).

        Returns:
            The response (a wrong password is an outcome).

        Raises:
            PtaError: When there is no definite answer: its status says why.
        """
        check_password(request.password)
        credentials = agent_pb2.Credentials(username=request.username, password=request.password)
        request_id, verdict = await self._flow.run(
            "signin.completed",
            credentials,
            request.client_ip,
            peer=peer,
            deadline=deadline,
            grant=True,
            api=api,
            dispatching=dispatching,
        )
        return _response(request_id, verdict)

    def _deadline(self, remaining: float | None) -> float:
        """Event-loop time at which a call with ``remaining`` seconds (or none) is answered."""
        budget = self._timeout if remaining is None else min(self._timeout, remaining)
        return asyncio.get_running_loop().time() + budget

    async def CompleteMfa(  # noqa: N802 - the contract's name
        self,
        request: signin_pb2.CompleteMfaRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> signin_pb2.SignInResponse:
        """Finish a sign-in that was answered MFA_REQUIRED with the user's one-time code."""
        async with rpc_errors(context):
            started = time.perf_counter()
            # Refused before the code is spent; recorded as the decision would use it.
            client_ip = client_address(
                parse_client_ip(request.client_ip), context.peer(), self._trusted
            )
            try:
                verdict, challenge = self._policy.complete(request.challenge_id, request.code)
            except PtaError as error:
                log.info("mfa.completed", status=error.code.name, reason=error.message)
                raise
            log.info(
                "mfa.completed",
                status="OK",
                request_id=challenge.request_id,
                tenant=challenge.tenant,
                user=challenge.subject,
                client_ip=client_ip,
                answer=outcome_name(verdict.outcome),
                decided_by=verdict.decided_by,
                duration_ms=elapsed_ms(started),
            )
            return _response(challenge.request_id, verdict)

    async def GetSigningKeys(  # noqa: N802 - the contract's name
        self,
        request: signin_pb2.GetSigningKeysRequest,  # noqa: ARG002 - it has no fields
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> signin_pb2.GetSigningKeysResponse:
        """Publish the keys that verify this broker's tokens."""
        async with rpc_errors(context):
            signer = self._policy.signer
            return signin_pb2.GetSigningKeysResponse(jwks_json=signer.jwks(), issuer=signer.issuer)

    async def ChangePassword(  # noqa: N802 - the contract's name
        self,
        request: signin_pb2.ChangePasswordRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> signin_pb2.ChangePasswordResponse:
        """Change a user's password in their directory, as the user, through an agent."""
        async with rpc_errors(context):
            check_password(request.old_password)
            check_password(request.new_password)
            credentials = agent_pb2.Credentials(
                username=request.username,
                password=request.old_password,
                new_password=request.new_password,
            )
            request_id, verdict = await self._flow.run(
                "password_change.completed",
                credentials,
                request.client_ip,
                peer=context.peer(),
                deadline=self._deadline(context.time_remaining()),
                grant=False,
                api="password_change",
                mfa_code=request.mfa_code,
                dispatching=_committing(context),
            )
            return signin_pb2.ChangePasswordResponse(
                outcome=verdict.outcome,  # type: ignore[arg-type]
                request_id=request_id,
                message=(
                    "password changed" if verdict.outcome == Outcome.SUCCESS else verdict.message
                ),
                retry_after_seconds=verdict.retry_after,
            )


def _committing(context: grpc.aio.ServicerContext[Any, Any]) -> Callable[[], Awaitable[None]]:
    """Send the call's response headers: what a call does just before an agent may try it.

    A gRPC client commits a call once it has the response headers (gRFC A6) and never
    resends it by itself after that, whatever happens to this broker next (even SIGKILL); an
    UNAVAILABLE answered before them (no agent here, the broker stopping) is still resent to
    another broker by the client's retry policy (``pta/failover.py``).
    """
    return functools.partial(context.send_initial_metadata, ())


def _response(request_id: str, verdict: Verdict) -> signin_pb2.SignInResponse:
    return signin_pb2.SignInResponse(
        outcome=verdict.outcome,  # type: ignore[arg-type]
        request_id=request_id,
        message=verdict.message,
        token=verdict.token,
        token_expires_at=verdict.token_expires_at,
        mfa_challenge_id=verdict.challenge_id,
        mfa_expires_in_seconds=verdict.challenge_ttl,
        retry_after_seconds=verdict.retry_after,
    )
