"""``agent/validation.py``: what an agent acts on, and what never reaches its directory.

Real HPKE (``pta/sealing.py``) with real keys; the directory is a recorder of the checks that
reach it (what a directory then answers is tested against slapd and Samba elsewhere): these
tests are about the decisions taken before any directory is asked.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from agent.identity import AgentIdentity
from agent.validation import CLOCK_SKEW_MS, ReplayGuard, Validator
from agent.verdicts import Check, Verdict
from pta import sealing
from pta.errors import DirectoryUnavailable
from pta.v1 import agent_pb2, outcome_pb2
from tests.secrets_registry import secret

if TYPE_CHECKING:
    from collections.abc import Sequence

Outcome = outcome_pb2.Outcome
SUCCESS = Verdict(Outcome.SUCCESS)
NOW_MS = 1_800_000_000_000
DOMAIN = "example.com"


class Recorder:
    """A directory stand-in that records the checks reaching it and answers as told."""

    def __init__(self, answer: Verdict | Exception = SUCCESS) -> None:
        """Answer every check with ``answer`` (an exception is that check's failure)."""
        self.checks: list[Check] = []
        self.answer = answer

    async def check_all(self, checks: Sequence[Check]) -> list[Verdict | Exception]:
        """Record, then answer each."""
        self.checks.extend(checks)
        return [self.answer for _ in checks]


def identity(agent_id: str = "agent-1") -> AgentIdentity:
    """An identity of acme with a fresh envelope key (TLS material is not used here)."""
    return AgentIdentity(
        agent_id=agent_id,
        tenant="acme",
        broker="127.0.0.1:1",
        agent_endpoint="127.0.0.1:2",
        domains=(DOMAIN,),
        ca_pem=b"",
        cert_pem=b"",
        tls_key_pem=b"",
        envelope_key=sealing.generate_key(),
    )


def request(  # noqa: PLR0913 - each is one thing a forger could change
    to: AgentIdentity,
    request_id: str,
    password: str,
    *,
    user: str = f"alice@{DOMAIN}",
    domain: str = DOMAIN,
    sealed_domain: str = DOMAIN,
    deadline_ms: int = NOW_MS + 5_000,
    tenant: str = "acme",
) -> agent_pb2.ValidationRequest:
    """A request whose envelope is sealed to ``to``'s key for the context given."""
    context = sealing.EnvelopeContext(
        tenant=tenant,
        agent_id=to.agent_id,
        request_id=request_id,
        domain=sealed_domain,
        deadline_unix_ms=deadline_ms,
    )
    plaintext = agent_pb2.Credentials(username=user, password=password).SerializeToString()
    envelope = sealing.seal(plaintext, to.envelope_key.public_key(), context)
    return agent_pb2.ValidationRequest(
        request_id=request_id, envelope=envelope, deadline_unix_ms=deadline_ms, domain=domain
    )


def validator(me: AgentIdentity, directory: Recorder, **kwargs: object) -> Validator:
    """A validator of ``me`` whose every domain is checked by ``directory``, at NOW_MS."""
    return Validator(
        me,
        lambda domain: directory if domain == DOMAIN else None,  # type: ignore[arg-type,return-value]
        clock_ms=lambda: NOW_MS,
        **kwargs,  # type: ignore[arg-type]
    )


class TestOpening:
    """An envelope opens only for the agent, tenant, request, domain and deadline it names."""

    async def test_a_sealed_request_is_checked(self) -> None:
        """Opened, checked once with the sealed credentials, answered with the verdict."""
        me, directory = identity(), Recorder(Verdict(Outcome.SUCCESS, "ok"))
        password = secret("validation")
        result = await validator(me, directory).validate(request(me, "r1", password))
        assert (result.request_id, result.outcome, result.message) == ("r1", Outcome.SUCCESS, "ok")
        assert [(c.username, c.password) for c in directory.checks] == [
            (f"alice@{DOMAIN}", password)
        ]

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"to": "other"}, "does not open"),
            ({"tenant": "globex"}, "does not open"),
            ({"sealed_domain": "example.org"}, "does not open"),
            ({"user": "alice@example.org"}, "not of the request's domain"),
            ({"deadline_ms": NOW_MS - CLOCK_SKEW_MS - 1}, "expired"),
        ],
        ids=["another-agents-key", "another-tenant", "another-domain", "foreign-user", "expired"],
    )
    async def test_refused_before_the_directory(
        self, change: dict[str, object], reason: str
    ) -> None:
        """Sealed to someone else, for another context, or expired: REQUEST_REJECTED, no check."""
        me, directory = identity(), Recorder()
        to = identity("agent-2") if change.pop("to", None) == "other" else me
        built = request(to, "r1", secret("validation"), **change)  # type: ignore[arg-type]
        result = await validator(me, directory).validate(built)
        assert result.outcome == Outcome.REQUEST_REJECTED
        assert reason in result.message
        assert directory.checks == []

    async def test_a_stretched_deadline_does_not_open(self) -> None:
        """The deadline is bound into the envelope: one moved after sealing breaks it."""
        me, directory = identity(), Recorder()
        built = request(me, "r1", secret("validation"))
        built.deadline_unix_ms += 60_000
        result = await validator(me, directory).validate(built)
        assert (result.outcome, result.message) == (
            Outcome.REQUEST_REJECTED,
            "envelope does not open with this agent's key",
        )
        assert directory.checks == []

    async def test_a_deadline_within_the_clock_skew_is_honoured(self) -> None:
        """Clocks differ: a deadline just inside the allowed skew still counts as live."""
        me, directory = identity(), Recorder()
        live = request(me, "r1", secret("validation"), deadline_ms=NOW_MS - CLOCK_SKEW_MS)
        assert (await validator(me, directory).validate(live)).outcome == Outcome.SUCCESS

    @pytest.mark.parametrize(
        "envelope", [b"", b"\x00" * 10, b"x" * 5000], ids=["empty", "short", "garbage"]
    )
    async def test_garbage_gets_a_definite_answer(self, envelope: bytes) -> None:
        """Bytes that are no envelope: REQUEST_REJECTED, no exception, nothing checked."""
        me, directory = identity(), Recorder()
        bad = agent_pb2.ValidationRequest(
            request_id="r1", envelope=envelope, deadline_unix_ms=NOW_MS + 5000, domain=DOMAIN
        )
        assert (await validator(me, directory).validate(bad)).outcome == Outcome.REQUEST_REJECTED
        assert directory.checks == []

    async def test_a_request_id_too_long_or_missing(self) -> None:
        """The id is bound into the envelope and logged: missing or oversized is refused."""
        me, directory = identity(), Recorder()
        check = validator(me, directory)
        for request_id in ("", "r" * 1000):
            built = request(me, "r1", secret("validation"))
            built.request_id = request_id
            assert (await check.validate(built)).outcome == Outcome.REQUEST_REJECTED
        assert directory.checks == []

    async def test_no_directory_for_the_domain(self) -> None:
        """A domain this agent serves no directory for: refused, never guessed."""
        me, directory = identity(), Recorder()
        built = request(me, "r1", secret("validation"), user="alice@example.org")
        built.domain = "example.org"
        result = await validator(me, directory).validate(built)
        assert result.outcome == Outcome.REQUEST_REJECTED
        assert directory.checks == []


class TestReplays:
    """A request id is acted on once, across identities of the same agent."""

    async def test_a_replay_is_refused(self) -> None:
        """The same request twice: checked once, the second REQUEST_REJECTED."""
        me, directory = identity(), Recorder()
        check = validator(me, directory)
        sent = request(me, "r1", secret("validation"))
        assert (await check.validate(sent)).outcome == Outcome.SUCCESS
        again = await check.validate(sent)
        assert again.outcome == Outcome.REQUEST_REJECTED
        assert "replay" in again.message
        assert len(directory.checks) == 1

    async def test_the_guard_is_shared_by_a_renewed_identity(self) -> None:
        """One guard for the agent: a replay to its other identity is refused too."""
        old, directory, guard = identity(), Recorder(), ReplayGuard()
        renewed = dataclasses.replace(old, envelope_key=sealing.generate_key())
        password = secret("validation")
        assert (
            await validator(old, directory, replay=guard).validate(request(old, "r1", password))
        ).outcome == Outcome.SUCCESS
        replayed = await validator(renewed, directory, replay=guard).validate(
            request(renewed, "r1", password)
        )
        assert replayed.outcome == Outcome.REQUEST_REJECTED
        assert len(directory.checks) == 1

    async def test_a_batch_never_checked_is_forgotten(self) -> None:
        """Opened but never acknowledged (the stream ended): its ids may come again."""
        me, directory = identity(), Recorder()
        check = validator(me, directory)
        sent = request(me, "r1", secret("validation"))
        check.forget(check.open_batch([sent]))
        assert (await check.validate(sent)).outcome == Outcome.SUCCESS
        assert len(directory.checks) == 1


class TestAnswers:
    """Every request of a batch gets exactly one answer, in order, whatever fails."""

    async def test_directory_down_answers_each_of_its_checks(self) -> None:
        """The directory unreachable: DIRECTORY_UNAVAILABLE, and refusals stay refusals."""
        me = identity()
        directory = Recorder(DirectoryUnavailable("the directory did not answer"))
        check = validator(me, directory)
        batch = [
            request(me, "r1", secret("validation")),
            request(identity("agent-2"), "r2", secret("validation")),
            request(me, "r3", secret("validation")),
        ]
        results = await check.validate_batch(batch)
        assert [(r.request_id, r.outcome) for r in results] == [
            ("r1", Outcome.DIRECTORY_UNAVAILABLE),
            ("r2", Outcome.REQUEST_REJECTED),
            ("r3", Outcome.DIRECTORY_UNAVAILABLE),
        ]

    async def test_a_bug_costs_one_answer_and_says_nothing(self) -> None:
        """An unexpected error: DIRECTORY_UNAVAILABLE with a fixed text, not the error's."""
        me, directory = identity(), Recorder(RuntimeError("dn=cn=secret-service,dc=example"))
        result = await validator(me, directory).validate(request(me, "r1", secret("validation")))
        assert (result.outcome, result.message) == (
            Outcome.DIRECTORY_UNAVAILABLE,
            "internal agent error",
        )
