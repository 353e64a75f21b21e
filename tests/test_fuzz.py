"""Fuzzing what parses untrusted bytes: nothing crashes, nothing forged reaches a directory.

Hypothesis generates and shrinks the inputs; the run is bounded (``max_examples``) so it stays
part of the normal suite. Its example database under ``.hypothesis/`` keeps failing cases.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.identity import AgentIdentity
from agent.validation import Validator
from pta import sealing
from pta.errors import EnvelopeRejected, Unauthenticated
from pta.tokens import parse_token
from pta.v1 import agent_pb2, outcome_pb2, signin_pb2
from tests.conftest import DOMAIN, USERS
from tests.secrets_registry import secret

if TYPE_CHECKING:
    from tests.support import BrokerProcess

Outcome = outcome_pb2.Outcome
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _NoDirectory:
    """Fails the test if anything forged reaches it."""

    reached = 0

    async def verify(self, *_credentials: str) -> object:
        type(self).reached += 1
        raise AssertionError("a forged envelope reached the directory")


def _identity() -> AgentIdentity:
    return AgentIdentity(
        agent_id="agt-fuzz",
        tenant="acme",
        broker="127.0.0.1:1",
        agent_endpoint="127.0.0.1:2",
        domains=(DOMAIN,),
        ca_pem=b"",
        cert_pem=b"",
        tls_key_pem=b"",
        envelope_key=sealing.generate_key(),
    )


IDENTITY = _identity()
GENUINE = sealing.seal(
    agent_pb2.Credentials(username=f"alice@{DOMAIN}", password=secret("pw")).SerializeToString(),
    IDENTITY.envelope_key.public_key(),
    sealing.EnvelopeContext(
        tenant="acme",
        agent_id="agt-fuzz",
        request_id="r-genuine",
        domain=DOMAIN,
        deadline_unix_ms=2**50,
    ),
)


class TestEnvelopeFuzz:
    """Forged, truncated, mutated and replayed envelopes are refused before any LDAP."""

    @FUZZ
    @given(
        envelope=st.one_of(
            st.binary(max_size=512),
            st.builds(
                lambda cut, flip: bytes(
                    b ^ (1 if i == flip else 0) for i, b in enumerate(GENUINE[:cut])
                ),
                st.integers(0, len(GENUINE)),
                st.integers(0, len(GENUINE)),
            ),
        ),
        request_id=st.text(max_size=80),
        domain=st.text(max_size=300),
        deadline=st.integers(-(2**63), 2**63 - 1),
    )
    def test_forged_envelopes_never_reach_the_directory(
        self, envelope: bytes, request_id: str, domain: str, deadline: int
    ) -> None:
        """Every answer is REQUEST_REJECTED unless the envelope is the genuine one intact."""
        validator = Validator(IDENTITY, lambda _domain: _NoDirectory())  # type: ignore[arg-type, return-value]
        request = agent_pb2.ValidationRequest(
            request_id=request_id, envelope=envelope, deadline_unix_ms=deadline, domain=domain
        )
        genuine = (envelope, request_id, domain, deadline) == (
            GENUINE,
            "r-genuine",
            DOMAIN,
            2**50,
        )
        if genuine:
            return
        result = asyncio.run(validator.validate(request))
        assert result.outcome == Outcome.REQUEST_REJECTED
        assert _NoDirectory.reached == 0

    def test_replay_is_refused(self) -> None:
        """The genuine envelope opens once; the same request id again is refused."""
        validator = Validator(IDENTITY, lambda _domain: None)
        request = agent_pb2.ValidationRequest(
            request_id="r-genuine", envelope=GENUINE, deadline_unix_ms=2**50, domain=DOMAIN
        )
        assert validator.open(request).username == f"alice@{DOMAIN}"
        with pytest.raises(EnvelopeRejected, match="replay"):
            validator.open(request)

    def test_forgotten_when_never_acknowledged(self) -> None:
        """A batch opened but never acknowledged may come back; a replay in it stays refused.

        The agent opens a batch while its acknowledgement is written; if the stream ends first,
        the broker sends the request again (perhaps to this agent's renewed identity).
        """
        directory = object()  # Never reached: nothing here is checked.
        validator = Validator(IDENTITY, lambda _domain: directory)  # type: ignore[arg-type, return-value]
        request = agent_pb2.ValidationRequest(
            request_id="r-genuine", envelope=GENUINE, deadline_unix_ms=2**50, domain=DOMAIN
        )
        first = validator.open_batch([request])
        replayed = validator.open_batch([request])
        assert replayed.answers[0] is not None
        assert replayed.answers[0][0] == Outcome.REQUEST_REJECTED
        validator.forget(replayed)  # It remembered nothing: the id stays remembered.
        with pytest.raises(EnvelopeRejected, match="replay"):
            validator.open(request)
        validator.forget(first)
        assert validator.open(request).username == f"alice@{DOMAIN}"


class TestTokenFuzz:
    """Enrolment tokens from anywhere: parsed or refused, never anything else."""

    @FUZZ
    @given(text=st.text(max_size=400))
    def test_any_text(self, text: str) -> None:
        """Arbitrary text is a token or Unauthenticated with one fixed message (no echo)."""
        refused: Unauthenticated | None = None
        try:
            parse_token(text)
        except Unauthenticated as error:
            refused = error
        if refused is not None:
            assert refused.message == (
                "malformed enrolment token: expected pta1.<id>.<secret>.<ca-sha256>"
            )


class TestSignInFuzz:
    """Arbitrary bytes as a SignIn request: a clear status each time, and still serving."""

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(payload=st.binary(max_size=2048))
    @pytest.mark.usefixtures("agent")
    def test_random_bytes(self, broker: BrokerProcess, payload: bytes) -> None:
        """Only client-error statuses or a normal answer; never INTERNAL or UNKNOWN."""
        with broker.channel() as channel:
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/pta.v1.SignInService/SignIn"
            )
            status = grpc.StatusCode.OK
            try:
                reply = signin_pb2.SignInResponse.FromString(call(payload, timeout=10))
            except grpc.RpcError as error:
                status = error.code()
        expected = {
            grpc.StatusCode.OK,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAVAILABLE,
        }
        assert status in expected
        if status == grpc.StatusCode.OK:
            assert reply.outcome in (Outcome.SUCCESS, Outcome.INVALID_CREDENTIALS)

    @pytest.mark.usefixtures("agent")
    def test_still_serving(self, broker: BrokerProcess) -> None:
        """After the fuzzing, a sign-in works."""
        assert broker.sign_in(f"alice@{DOMAIN}", USERS["alice"]).outcome == Outcome.SUCCESS
