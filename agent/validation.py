"""One validation request, from sealed envelope to outcome, refusing anything not meant for us.

An envelope is opened only if it was sealed to this agent, for this tenant, request id, domain
and deadline; a request id is accepted once; an expired request is refused. None of those
reaches the directory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from google.protobuf.message import DecodeError

from agent.metrics import OFF
from agent.verdicts import Check
from pta import sealing
from pta.errors import DirectoryUnavailable, EnvelopeRejected, PtaError
from pta.expiring import ExpiringMap
from pta.names import parse_upn
from pta.v1 import agent_pb2, outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.directory import LdapDirectory
    from agent.identity import AgentIdentity
    from agent.metrics import Counts

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome
#: The largest ``directory_us`` the contract's uint32 holds.
MAX_US = 2**32 - 1
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
        #: The latest time a request was checked against (Unix ms): ids are kept until their
        #: deadline and the clock skew have passed by it.
        self._now_ms = 0
        self._seen: ExpiringMap[str, None] = ExpiringMap(None, clock=lambda: self._now_ms)

    def __contains__(self, request_id: object) -> bool:
        """Whether ``request_id`` was acted on before (and could still be replayed)."""
        return request_id in self._seen

    def forget(self, request_id: str) -> None:
        """Let an id be acted on again: only for one opened but never acknowledged nor tried."""
        self._seen.pop(request_id)

    def remember(self, request_id: str, deadline_ms: int, now_ms: int) -> None:
        """Record an id until no clock could take its request as unexpired; purge now and then.

        A request is refused as expired once its deadline plus :data:`CLOCK_SKEW_MS` is
        behind; until then (that instant included) its id is held.
        """
        self._now_ms = now_ms
        self._seen.put(request_id, None, expires=deadline_ms + CLOCK_SKEW_MS + 1)
        if len(self._seen) % 1024 == 0:
            self._seen.purge()


@dataclass(slots=True)
class OpenedBatch:
    """A batch whose envelopes are open: the checks to run, and the answers known already."""

    requests: Sequence[agent_pb2.ValidationRequest]
    #: Per request: (outcome, message) once known; None while its check is to run.
    answers: list[tuple[outcome_pb2.Outcome, str] | None]
    work: dict[LdapDirectory, list[tuple[int, Check]]] = field(repr=False)
    started: float


class Validator:
    """Opens envelopes for one agent identity and asks the right directory."""

    def __init__(
        self,
        identity: AgentIdentity,
        directory_for: Callable[[str], LdapDirectory | None],
        *,
        replay: ReplayGuard | None = None,
        clock_ms: Callable[[], int] | None = None,
        metrics: Counts = OFF,
    ) -> None:
        """Bind the validator to an identity and a domain -> directory lookup."""
        self._metrics = metrics
        self._identity = identity
        self._directory_for = directory_for
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._seen = replay if replay is not None else ReplayGuard()

    async def validate(self, request: agent_pb2.ValidationRequest) -> agent_pb2.ValidationResult:
        """Answer one request; never raises for anything the request contains."""
        return (await self.validate_batch([request]))[0]

    async def validate_batch(
        self, requests: Sequence[agent_pb2.ValidationRequest]
    ) -> list[agent_pb2.ValidationResult]:
        """Answer a batch, in order: :meth:`open_batch`, then :meth:`check_batch`."""
        return await self.check_batch(self.open_batch(requests))

    def open_batch(self, requests: Sequence[agent_pb2.ValidationRequest]) -> OpenedBatch:
        """Open a batch's envelopes and say which directory checks what; nothing is tried yet.

        Separate from checking so that the agent opens a batch while its acknowledgement is
        being written (``agent/link.py``), and binds only once it is: opening tries no password.
        Never raises for anything a request contains: a request that fails to open has its
        answer (REQUEST_REJECTED) already, and the others are still checked.
        """
        batch = OpenedBatch(requests, [None] * len(requests), {}, time.perf_counter())
        for index, request in enumerate(requests):
            try:
                directory, check = self._check_for(request)
            except Exception as error:  # noqa: BLE001 - answered as this request's failure
                batch.answers[index] = _failure(request, error)
                continue
            batch.work.setdefault(directory, []).append((index, check))
        return batch

    def forget(self, batch: OpenedBatch) -> None:
        """Forget the ids a batch opened, when it will never be checked here.

        For a batch whose acknowledgement was never written (the stream ended first): the
        broker sends it again elsewhere, possibly to this agent's other identity during a
        certificate renewal, which must not refuse it as a replay. Only the ids this batch
        itself remembered: one refused as a replay stays remembered.
        """
        for items in batch.work.values():
            for index, _ in items:
                self._seen.forget(batch.requests[index].request_id)

    async def check_batch(self, batch: OpenedBatch) -> list[agent_pb2.ValidationResult]:
        """Check an opened batch, each directory's checks in one go; answer in order.

        Never raises for anything a request contains: a check that fails answers its own
        request (DIRECTORY_UNAVAILABLE), and the others are still answered.
        """
        requests, answers, started = batch.requests, batch.answers, batch.started
        batches = list(batch.work.items())
        batch.work.clear()
        # Microseconds at each directory, for the broker's audit: its checks went in one go.
        spent = [0] * len(batches)

        async def timed(n: int, directory: LdapDirectory, checks: list[Check]) -> list[Any]:
            started_at = time.perf_counter()
            try:
                return await directory.check_all(checks)
            finally:
                spent[n] = min(int((time.perf_counter() - started_at) * 1e6), MAX_US)

        verdicts = await asyncio.gather(
            *(
                timed(n, directory, [check for _, check in items])
                for n, (directory, items) in enumerate(batches)
            ),
            return_exceptions=True,
        )
        at_directory = [0] * len(requests)
        for n, (_, items) in enumerate(batches):
            for index, _ in items:
                at_directory[index] = spent[n]
        for (_, items), done in zip(batches, verdicts, strict=True):
            if isinstance(done, BaseException) and not isinstance(done, Exception):
                raise done
            # When the hand-off itself failed, that failure answers each of its checks.
            answered = [done] * len(items) if isinstance(done, Exception) else done
            for (index, _), verdict in zip(items, answered, strict=True):
                answers[index] = (
                    _failure(requests[index], verdict)
                    if isinstance(verdict, Exception)
                    else (verdict.outcome, verdict.message)
                )
        del batches
        results = []
        for request, answer, micros in zip(requests, answers, at_directory, strict=True):
            outcome, message = answer or (Outcome.DIRECTORY_UNAVAILABLE, "internal agent error")
            self._metrics.validated(Outcome.Name(outcome))
            # Debug: the broker's signin.completed is the one canonical event per sign-in.
            log.debug(
                "validation.completed",
                request_id=request.request_id[:64],
                domain=request.domain[:64],
                outcome=Outcome.Name(outcome),
                batch=len(requests),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            results.append(
                agent_pb2.ValidationResult(
                    request_id=request.request_id,
                    outcome=outcome,
                    message=message,
                    directory_us=micros,
                )
            )
        return results

    def _check_for(self, request: agent_pb2.ValidationRequest) -> tuple[LdapDirectory, Check]:
        """Open a request and say which directory checks what.

        Raises:
            EnvelopeRejected: For any request this agent must not act on.
        """
        credentials = self.open(request)
        directory = self._directory_for(request.domain)
        if directory is None:
            raise EnvelopeRejected(f"this agent has no directory for {request.domain}")
        check = Check(credentials.username, credentials.password, credentials.new_password)
        credentials.Clear()
        return directory, check

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


def _failure(
    request: agent_pb2.ValidationRequest, error: Exception
) -> tuple[outcome_pb2.Outcome, str]:
    """The answer to a request whose check failed with ``error``, logged."""
    if isinstance(error, EnvelopeRejected):
        log.warning("validation.rejected", request_id=request.request_id[:64], reason=error.message)
        return Outcome.REQUEST_REJECTED, error.message
    if isinstance(error, DirectoryUnavailable):
        log.warning(
            "validation.directory_unavailable",
            request_id=request.request_id[:64],
            reason=repr(error.__cause__),
        )
        return Outcome.DIRECTORY_UNAVAILABLE, error.message
    # A bug must cost one sign-in a clear UNAVAILABLE, not the agent its stream.
    log.error("validation.failed", request_id=request.request_id[:64], exc_info=error)
    return Outcome.DIRECTORY_UNAVAILABLE, "internal agent error"
