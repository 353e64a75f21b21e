"""One credential check, from what the client typed to what it is told: the sign-in use case.

Rate limit, tenant, a password change's banned new password, the policy's admission (a locked
user, a repeat, the directory guard are answered here), the second factor a password change
carries, the check by an agent (through :func:`~broker.dispatch.checks.check`),
what the agent's answer may show the client, the token or MFA challenge a right password earns,
and one audit event. No gRPC: the servicers in :mod:`broker.api.signin` turn requests into calls
of :meth:`SignInFlow.run` and its result into responses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from broker.dispatch import checks
from broker.dispatch.jobs import AgentLost
from broker.metrics import OFF, outcome_label
from broker.policy.ratelimit import RateLimiter, client_address
from broker.policy.signin_policy import REPEATED, Attempt, Verdict
from pta.errors import (
    AgentMayHaveTried,
    DirectoryUnavailable,
    InvalidRequest,
    NotFound,
    PtaError,
)
from pta.names import parse_upn
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from ipaddress import IPv4Network, IPv6Network

    from broker.dispatch.dispatcher import Dispatcher
    from broker.dispatch.jobs import Answer
    from broker.metrics import Counts
    from broker.policy.signin_policy import SignInPolicy
    from broker.store.protocols import Store
    from pta.v1 import agent_pb2

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome
MAX_CLIENT_IP_CHARS = 64
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
    Outcome.CHANGE_REFUSED: (
        "the organisation's directory refused to change the password, for a reason other than"
        " its password rules: ask an administrator"
    ),
}


@dataclass(slots=True)
class _Tally:
    """What a sign-in is counted as: its tenant once known, its answer's or status's name."""

    tenant: str = ""
    outcome: str = "UNKNOWN"


class SignInFlow:
    """Checks credentials for every tenant: admission, an agent's check, the policy's answer."""

    def __init__(  # noqa: PLR0913 - wiring
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        policy: SignInPolicy,
        limiter: RateLimiter | None = None,
        trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = (),
        metrics: Counts = OFF,
    ) -> None:
        """Wire the flow (see :class:`broker.api.signin.SignInService` for the values)."""
        self._metrics = metrics
        self._store = store
        self._dispatcher = dispatcher
        self._policy = policy
        self._limiter = limiter if limiter is not None else RateLimiter(0)
        self._trusted = trusted_proxies

    async def run(  # noqa: PLR0913 - the call's parts, by name
        self,
        event: str,
        credentials: agent_pb2.Credentials,
        client_ip: str,
        *,
        peer: str,
        deadline: float,
        grant: bool,
        api: str,
        mfa_code: str | None = None,
        dispatching: Callable[[], Awaitable[None]] | None = None,
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
            api: Which API carried it, for the metrics: signin, signin_stream or
                password_change.
            mfa_code: A password change's TOTP code (None for a sign-in): checked first
                when the policy wants a second factor.
            dispatching: Awaited just before the credentials go to an agent (see
                :func:`~broker.dispatch.checks.check`); not when the policy
                or a missing agent answers first.

        Returns:
            The request id, and what the client is told.
        """
        started = time.perf_counter()
        tally = _Tally()
        self._metrics.signin_started()
        try:
            request_id, verdict = await self._checked(
                event,
                credentials,
                client_ip,
                tally,
                peer=peer,
                deadline=deadline,
                grant=grant,
                mfa_code=mfa_code,
                dispatching=dispatching,
            )
        except PtaError as error:
            tally.outcome = error.code.name
            raise
        except asyncio.CancelledError:
            tally.outcome = "CANCELLED"
            raise
        else:
            tally.outcome = outcome_label(verdict.outcome)
        finally:
            self._metrics.signin(api, tally.tenant, tally.outcome, time.perf_counter() - started)
        return request_id, verdict

    async def _checked(  # noqa: PLR0913 - the call's parts, by name
        self,
        event: str,
        credentials: agent_pb2.Credentials,
        client_ip: str,
        tally: _Tally,
        *,
        peer: str,
        deadline: float,
        grant: bool,
        mfa_code: str | None,
        dispatching: Callable[[], Awaitable[None]] | None,
    ) -> tuple[str, Verdict]:
        """:meth:`run`, its tenant told to ``tally`` once known."""
        request_id = secrets.token_hex(12)
        started = time.perf_counter()

        upn = parse_upn(credentials.username)
        claimed = parse_client_ip(client_ip)
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
            tally.tenant = tenant
            self._store.check_reachable()  # A revocation made elsewhere may be unseen here.
            async with self._policy.attempt(
                tenant,
                upn,
                credentials.password,
                caller,
                deadline=deadline,
                new_password=credentials.new_password,
            ) as admission:
                admitted = admission
                if isinstance(admitted, Attempt) and mfa_code is not None:
                    # A wrong or missing code: nothing reaches the directory.
                    admitted = self._policy.second_factor(admitted, mfa_code) or admitted
                if isinstance(admitted, Verdict):  # Decided before any agent: locked, a repeat…
                    credentials.Clear()
                    verdict = admitted
                else:
                    audit = audit.bind(location=admitted.location)
                    answer = await self._directory_answer(
                        admitted, credentials, request_id, deadline, dispatching
                    )
                    if answer is None:  # A lost repeat of an unknown name: as any repeat.
                        verdict = REPEATED
                    else:
                        audit = audit.bind(
                            agent_id=answer.agent_id,
                            outcome=outcome_name(answer.outcome),
                            agent_ms=answer.agent_ms,
                            directory_ms=answer.directory_ms,
                        )
                        outcome, message = visible(answer)
                        verdict = Verdict(outcome=outcome, message=message, decided_by="directory")
                        if grant and outcome == Outcome.SUCCESS:
                            granted = self._policy.grant(admitted, request_id)
                            verdict = (
                                replace(granted, message=message) if granted.token else granted
                            )
        except PtaError as error:
            audit.info(
                event, status=error.code.name, reason=error.message, duration_ms=elapsed_ms(started)
            )
            raise
        audit.info(
            event,
            status="OK",
            answer=outcome_name(verdict.outcome),
            decided_by=verdict.decided_by,
            duration_ms=elapsed_ms(started),
        )
        return request_id, verdict

    async def _directory_answer(
        self,
        attempt: Attempt,
        credentials: agent_pb2.Credentials,
        request_id: str,
        deadline: float,
        dispatching: Callable[[], Awaitable[None]] | None,
    ) -> Answer | None:
        """The directory's answer to an admitted attempt; None: answer it as a repeat.

        A repeat of a password refused as an unknown name whose agent was lost, with no room
        for another try, gets what any repeat gets, not UNAVAILABLE, which a known account's
        repeat (answered by the policy, never sent) could never get.
        """
        try:
            return await self._check_admitted(
                attempt, credentials, request_id, deadline, dispatching
            )
        except AgentLost:
            if not attempt.recheck:
                raise
            return None

    async def _check_admitted(
        self,
        attempt: Attempt,
        credentials: agent_pb2.Credentials,
        request_id: str,
        deadline: float,
        dispatching: Callable[[], Awaitable[None]] | None,
    ) -> Answer:
        """Seal and check an admitted attempt; the policy hears the directory's answer."""
        budget = deadline - asyncio.get_running_loop().time()
        plaintext = credentials.SerializeToString()
        credentials.Clear()
        try:
            # The policy hears the agent's real answer, even one that comes after the caller
            # stopped waiting: the directory counted that password whether or not we waited.
            settled, readmit = self._policy.accounting(attempt)
            return await checks.check(
                self._dispatcher,
                attempt.tenant,
                attempt.domain,
                request_id,
                plaintext,
                budget,
                settled=settled,
                readmit=readmit,
                dispatching=dispatching,
            )
        finally:
            del plaintext


def parse_client_ip(text: str) -> str:
    """A request's ``client_ip``, checked and normalised (``""`` when not given).

    Raises:
        InvalidRequest: When it is too long or not an IP address.
    """
    if not text:
        return ""
    if len(text) > MAX_CLIENT_IP_CHARS:
        raise InvalidRequest("client_ip is too long")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidRequest("client_ip is not an IP address") from None


def outcome_name(value: int) -> str:
    """An outcome's name for the audit, also for a value this broker does not know."""
    try:
        return Outcome.Name(value)
    except ValueError:
        return f"UNKNOWN({value})"


def visible(answer: Answer) -> tuple[int, str]:
    """Turn an agent's answer into the outcome and message the client may see.

    Raises:
        DirectoryUnavailable: The agent could not reach its directory.
        AgentMayHaveTried: The agent refused the request, or answered something unknown
            here: either way it had the password, so no client resends it by itself.
    """
    outcome = answer.outcome
    if outcome == Outcome.DIRECTORY_UNAVAILABLE:
        raise DirectoryUnavailable("the organisation's directory is unavailable; try again")
    if outcome == Outcome.REQUEST_REJECTED:
        raise AgentMayHaveTried("the agent refused the request; try again")
    if outcome == Outcome.UNKNOWN_USER:
        outcome = Outcome.INVALID_CREDENTIALS
    base = MESSAGES.get(outcome)
    if base is None:
        raise AgentMayHaveTried("the agent gave an answer this broker does not understand")
    detail = answer.message if outcome != Outcome.INVALID_CREDENTIALS else ""
    return outcome, f"{base} ({detail})" if detail else base


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (``time.perf_counter``), for the audit."""
    return round((time.perf_counter() - started) * 1000, 3)
