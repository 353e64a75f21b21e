"""``pta.v1.SignInService``: one sign-in in, one definite answer out, before its deadline.

The password lives here only long enough to be sealed, once per agent connection that may
check it; from then on only envelopes exist. The answer the client sees hides whether a user
exists; the audit event keeps the true outcome. ``SignInStream`` carries many sign-ins over
one call (``broker/signin_stream.py``); each of them takes the same path as ``SignIn``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import secrets
import time
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any

import structlog

from broker.jobs import AgentLost, Answer
from broker.policy import REPEATED, Attempt, SignInPolicy, Verdict
from broker.ratelimit import RateLimiter, client_address, peer_address
from broker.signin_stream import DEFAULT_IDLE_SECONDS, SignInStreamSession
from pta.errors import (
    DirectoryUnavailable,
    InvalidRequest,
    NotFound,
    Overloaded,
    PtaError,
    Unavailable,
    rpc_errors,
)
from pta.names import check_password, parse_upn
from pta.v1 import agent_pb2, outcome_pb2, signin_pb2, signin_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc

    from broker.dispatch import Dispatcher
    from broker.store import Store

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome
MAX_CLIENT_IP_CHARS = 64
#: SignInStreams one address may hold open at once (a front end needs one per process).
DEFAULT_STREAMS_PER_ADDRESS = 32
#: SignInStreams the broker holds open at once, from everyone.
MAX_STREAMS = 4096
#: What the user is told; the agent may add a detail such as "password expires in 3 days".
MESSAGES: dict[int, str] = {
    Outcome.SUCCESS: "signed in",
    Outcome.INVALID_CREDENTIALS: "wrong username or password",
    Outcome.PASSWORD_EXPIRED: "your password has expired: change it to sign in",
    Outcome.PASSWORD_MUST_CHANGE: "you must change your password before signing in",
    Outcome.ACCOUNT_LOCKED: "your account is locked",
    Outcome.ACCOUNT_DISABLED: "your account is disabled",
    Outcome.ACCOUNT_EXPIRED: "your account has expired",
    Outcome.ACCOUNT_RESTRICTED: "you may not sign in at this time or from this computer",
    Outcome.PASSWORD_REJECTED: "the new password does not meet the password policy",
}


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
        """
        self._trusted = trusted_proxies
        self._limiter = limiter if limiter is not None else RateLimiter(0)
        self._store = store
        self._dispatcher = dispatcher
        self._policy = policy
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
                request, peer=context.peer(), deadline=self._deadline(context.time_remaining())
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
                self.sign_in,
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
        self, request: signin_pb2.SignInRequest, *, peer: str, deadline: float
    ) -> signin_pb2.SignInResponse:
        """One sign-in, whichever call carried it.

        Args:
            request: What the client sent.
            peer: The caller's address as grpc names it (``ipv4:1.2.3.4:5``).
            deadline: Event-loop time by which it must be answered.

        Returns:
            The response (a wrong password is an outcome).

        Raises:
            PtaError: When there is no definite answer: its status says why.
        """
        check_password(request.password)
        credentials = agent_pb2.Credentials(username=request.username, password=request.password)
        request_id, verdict = await self._serve(
            "signin.completed",
            credentials,
            request.client_ip,
            peer=peer,
            deadline=deadline,
            grant=True,
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
            client_ip = client_address(_client_ip(request.client_ip), context.peer(), self._trusted)
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
                answer=_outcome_name(verdict.outcome),
                decided_by=verdict.decided_by,
                duration_ms=_ms(started),
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
            request_id, verdict = await self._serve(
                "password_change.completed",
                credentials,
                request.client_ip,
                peer=context.peer(),
                deadline=self._deadline(context.time_remaining()),
                grant=False,
                mfa_code=request.mfa_code,
            )
            return signin_pb2.ChangePasswordResponse(
                outcome=verdict.outcome,  # type: ignore[arg-type]
                request_id=request_id,
                message=(
                    "password changed" if verdict.outcome == Outcome.SUCCESS else verdict.message
                ),
                retry_after_seconds=verdict.retry_after,
            )

    async def _serve(  # noqa: PLR0913 - the call's parts, by name
        self,
        event: str,
        credentials: agent_pb2.Credentials,
        client_ip: str,
        *,
        peer: str,
        deadline: float,
        grant: bool,
        mfa_code: str | None = None,
    ) -> tuple[str, Verdict]:
        """Police, route, seal, dispatch and await one credential check; audit it as ``event``.

        Args:
            event: The audit event's name.
            credentials: What to check; cleared once sealed.
            client_ip: The end user's address as the request gives it.
            peer: The caller's address as grpc names it (the rate limit's key, unless the
                caller is a trusted proxy and ``client_ip`` is given).
            deadline: Event-loop time by which the answer is due.
            grant: Whether a right password earns a token (or an MFA challenge).
            mfa_code: A password change's TOTP code (None for a sign-in): checked first
                when the policy wants a second factor.

        Returns:
            The request id, and what the client is told.
        """
        request_id = secrets.token_hex(12)
        started = time.perf_counter()
        upn = parse_upn(credentials.username)
        claimed = _client_ip(client_ip)
        caller = client_address(claimed, peer, self._trusted)
        # The audit records the address every decision used (rate limit, location): a
        # client_ip only counts from a trusted proxy; one that did not count is kept apart.
        audit = log.bind(request_id=request_id, user=str(upn), client_ip=caller)
        if claimed and claimed != caller:
            audit = audit.bind(claimed_client_ip=claimed)
        try:
            if self._limiter.enabled:
                self._limiter.check(caller)
            tenant = self._store.tenant_for_domain(upn.domain)
            if tenant is None:
                audit = audit.bind(outcome="UNKNOWN_DOMAIN")
                raise NotFound(f"no organisation signs in users of {upn.domain}")
            audit = audit.bind(tenant=tenant)
            admitted = await self._policy.begin(
                tenant, upn, credentials.password, caller, deadline=deadline
            )
            if isinstance(admitted, Attempt) and mfa_code is not None:
                admitted = self._second_factor(admitted, mfa_code)
            if isinstance(admitted, Verdict):  # Decided before any agent: locked, a repeat…
                credentials.Clear()
                verdict = admitted
            else:
                audit = audit.bind(location=admitted.location)
                answer = await self._directory_answer(admitted, credentials, request_id, deadline)
                if answer is None:  # A lost repeat of an unknown name: as any repeat.
                    verdict = REPEATED
                else:
                    audit = audit.bind(
                        agent_id=answer.agent_id, outcome=_outcome_name(answer.outcome)
                    )
                    outcome, message = _visible(answer)
                    verdict = Verdict(outcome=outcome, message=message, decided_by="directory")
                    if grant and outcome == Outcome.SUCCESS:
                        granted = self._policy.grant(admitted, request_id)
                        verdict = replace(granted, message=message) if granted.token else granted
        except PtaError as error:
            audit.info(
                event, status=error.code.name, reason=error.message, duration_ms=_ms(started)
            )
            raise
        audit.info(
            event,
            status="OK",
            answer=_outcome_name(verdict.outcome),
            decided_by=verdict.decided_by,
            duration_ms=_ms(started),
        )
        return request_id, verdict

    async def _directory_answer(
        self,
        attempt: Attempt,
        credentials: agent_pb2.Credentials,
        request_id: str,
        deadline: float,
    ) -> Answer | None:
        """The directory's answer to an admitted attempt; None: answer it as a repeat.

        A repeat of a password refused as an unknown name whose agent was lost, with no room
        for another try, gets what any repeat gets, not UNAVAILABLE, which a known account's
        repeat (answered by the policy, never sent) could never get.
        """
        try:
            return await self._check_admitted(attempt, credentials, request_id, deadline)
        except AgentLost:
            if not attempt.recheck:
                raise
            return None

    def _second_factor(self, attempt: Attempt, code: str) -> Attempt | Verdict:
        """The attempt, if its code is right or none is wanted; else the policy's answer."""
        try:
            verdict = self._policy.second_factor(attempt, code)
        except BaseException:
            self._policy.end(attempt, None)
            raise
        if verdict is None:
            return attempt
        self._policy.end(attempt, None)  # Nothing reached the directory.
        return verdict

    async def _check_admitted(
        self,
        attempt: Attempt,
        credentials: agent_pb2.Credentials,
        request_id: str,
        deadline: float,
    ) -> Answer:
        """Seal and check an admitted attempt; the policy hears the directory's answer."""
        budget = deadline - asyncio.get_running_loop().time()
        plaintext = credentials.SerializeToString()
        credentials.Clear()
        try:
            # The policy hears the agent's real answer, even one that comes after the caller
            # stopped waiting: the directory counted that password whether or not we waited.
            return await self._dispatcher.check(
                attempt.tenant,
                attempt.domain,
                request_id,
                plaintext,
                budget,
                settled=functools.partial(self._policy.end, attempt),
                readmit=functools.partial(self._policy.readmit, attempt),
            )
        finally:
            del plaintext


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


def _client_ip(text: str) -> str:
    if not text:
        return ""
    if len(text) > MAX_CLIENT_IP_CHARS:
        raise InvalidRequest("client_ip is too long")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidRequest("client_ip is not an IP address") from None


def _outcome_name(value: int) -> str:
    try:
        return Outcome.Name(value)
    except ValueError:
        return f"UNKNOWN({value})"


def _visible(answer: Answer) -> tuple[int, str]:
    """Turn an agent's answer into the outcome and message the client may see.

    Raises:
        DirectoryUnavailable: The agent could not reach its directory.
        Unavailable: The agent refused the request, or answered something unknown here.
    """
    outcome = answer.outcome
    if outcome == Outcome.DIRECTORY_UNAVAILABLE:
        raise DirectoryUnavailable("the organisation's directory is unavailable; try again")
    if outcome == Outcome.REQUEST_REJECTED:
        raise Unavailable("the agent refused the request; try again")
    if outcome == Outcome.UNKNOWN_USER:
        outcome = Outcome.INVALID_CREDENTIALS
    base = MESSAGES.get(outcome)
    if base is None:
        raise Unavailable("the agent gave an answer this broker does not understand")
    detail = answer.message if outcome != Outcome.INVALID_CREDENTIALS else ""
    return outcome, f"{base} ({detail})" if detail else base


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
