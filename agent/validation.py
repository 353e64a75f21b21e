"""One validation request, from sealed envelope to outcome, refusing anything not meant for us.

An envelope is opened only if it was sealed to this agent, for this tenant, request id, domain
and deadline; a request id is accepted once; an expired request is refused. None of those
reaches the directory.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from google.protobuf.message import DecodeError

from pta import sealing
from pta.errors import DirectoryUnavailable, EnvelopeRejected, PtaError
from pta.names import parse_upn
from pta.v1 import agent_pb2, outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.directory import LdapDirectory
    from agent.identity import AgentIdentity

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome
#: Clocks of broker and agent may differ this much (ms) before a deadline counts as passed.
CLOCK_SKEW_MS = 30_000
MAX_REQUEST_ID_CHARS = 64


class ReplayGuard:
    """Request ids already acted on, kept until they could no longer be replayed.

    Shared by every identity of one agent, so that an envelope cannot be replayed across a
    certificate rotation either.
    """

    def __init__(self) -> None:
        """Start with no id seen."""
        #: request id -> deadline (Unix ms).
        self._seen: dict[str, int] = {}

    def __contains__(self, request_id: object) -> bool:
        """Whether ``request_id`` was acted on before."""
        return request_id in self._seen

    def remember(self, request_id: str, deadline_ms: int, now_ms: int) -> None:
        """Record an id; forget, now and then, the ids whose deadline is long past."""
        self._seen[request_id] = deadline_ms
        if len(self._seen) % 1024 == 0:
            horizon = now_ms - CLOCK_SKEW_MS
            self._seen = {rid: d for rid, d in self._seen.items() if d >= horizon}


class Validator:
    """Opens envelopes for one agent identity and asks the right directory."""

    def __init__(
        self,
        identity: AgentIdentity,
        directory_for: Callable[[str], LdapDirectory | None],
        *,
        replay: ReplayGuard | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        """Bind the validator to an identity and a domain -> directory lookup."""
        self._identity = identity
        self._directory_for = directory_for
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._seen = replay if replay is not None else ReplayGuard()

    async def validate(self, request: agent_pb2.ValidationRequest) -> agent_pb2.ValidationResult:
        """Answer one request; never raises for anything the request contains."""
        started = time.perf_counter()
        try:
            outcome, message = await self._validate(request)
        except EnvelopeRejected as error:
            log.warning(
                "validation.rejected", request_id=request.request_id[:64], reason=error.message
            )
            outcome, message = Outcome.REQUEST_REJECTED, error.message
        except DirectoryUnavailable as error:
            log.warning(
                "validation.directory_unavailable",
                request_id=request.request_id,
                reason=repr(error.__cause__),
            )
            outcome, message = Outcome.DIRECTORY_UNAVAILABLE, error.message
        except Exception:
            # A bug must cost one sign-in a clear UNAVAILABLE, not the agent its stream.
            log.exception("validation.failed", request_id=request.request_id[:64])
            outcome, message = Outcome.DIRECTORY_UNAVAILABLE, "internal agent error"
        # Debug: the broker's signin.completed is the one canonical event per sign-in.
        log.debug(
            "validation.completed",
            request_id=request.request_id[:64],
            domain=request.domain[:64],
            outcome=Outcome.Name(outcome),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return agent_pb2.ValidationResult(
            request_id=request.request_id, outcome=outcome, message=message
        )

    async def _validate(
        self, request: agent_pb2.ValidationRequest
    ) -> tuple[outcome_pb2.Outcome, str]:
        credentials = self.open(request)
        directory = self._directory_for(request.domain)
        if directory is None:
            raise EnvelopeRejected(f"this agent has no directory for {request.domain}")
        if credentials.new_password:
            verdict = await directory.change_password(
                credentials.username, credentials.password, credentials.new_password
            )
        else:
            verdict = await directory.verify(credentials.username, credentials.password)
        return verdict.outcome, verdict.message

    def open(self, request: agent_pb2.ValidationRequest) -> agent_pb2.Credentials:
        """Open a request's envelope, refusing replays, expired requests and forgeries.

        Raises:
            EnvelopeRejected: For any request this agent must not act on.
        """
        now = self._clock_ms()
        if not request.request_id or len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise EnvelopeRejected("request id missing or too long")
        if request.deadline_unix_ms + CLOCK_SKEW_MS < now:
            raise EnvelopeRejected("request expired")
        if request.request_id in self._seen:
            raise EnvelopeRejected("request id seen before (replay)")
        context = sealing.EnvelopeContext(
            tenant=self._identity.tenant,
            agent_id=self._identity.agent_id,
            request_id=request.request_id,
            domain=request.domain,
            deadline_unix_ms=request.deadline_unix_ms,
        )
        plaintext = sealing.open_envelope(request.envelope, self._identity.envelope_key, context)
        self._seen.remember(request.request_id, request.deadline_unix_ms, now)
        try:
            credentials = agent_pb2.Credentials.FromString(plaintext)
            upn = parse_upn(credentials.username)
        except (DecodeError, PtaError):
            raise EnvelopeRejected("envelope content is malformed") from None
        if upn.domain != request.domain:
            raise EnvelopeRejected("envelope user is not of the request's domain")
        return credentials
