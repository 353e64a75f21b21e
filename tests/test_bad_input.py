"""Malformed, oversized and hostile requests get a clear status, and the broker keeps serving."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from pta.v1 import outcome_pb2, signin_pb2
from tests.conftest import DOMAIN, USERS
from tests.secrets_registry import known, secret

if TYPE_CHECKING:
    from tests.support import BrokerProcess

Outcome = outcome_pb2.Outcome
SIGNIN = "/pta.v1.SignInService/SignIn"
#: The password of every request refused for something else.
PASSWORD = secret("pw")
#: A MFA code of the right shape, for challenges that are refused for something else.
CODE = known("123456")


def _raw_call(broker: BrokerProcess, payload: bytes) -> grpc.StatusCode:
    """Send raw bytes as a SignIn request (no client-side serialisation to stop us)."""
    with broker.channel() as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(SIGNIN)
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=10)
    code: grpc.StatusCode = caught.value.code()
    return code


@pytest.mark.usefixtures("agent")
class TestBadInput:
    """Each bad request is refused with its own status; the next good one still works."""

    @pytest.mark.parametrize(
        ("username", "password", "status"),
        [
            ("", PASSWORD, grpc.StatusCode.INVALID_ARGUMENT),
            (f"alice@{DOMAIN}", "", grpc.StatusCode.INVALID_ARGUMENT),
            ("alice", PASSWORD, grpc.StatusCode.INVALID_ARGUMENT),
            ("@example.com", PASSWORD, grpc.StatusCode.INVALID_ARGUMENT),
            ("alice@not a domain", PASSWORD, grpc.StatusCode.INVALID_ARGUMENT),
            ("a" * 300 + f"@{DOMAIN}", PASSWORD, grpc.StatusCode.INVALID_ARGUMENT),
            (f"alice@{DOMAIN}", secret("p" * 1025), grpc.StatusCode.INVALID_ARGUMENT),
            ("ali\nce@example.com", PASSWORD, grpc.StatusCode.INVALID_ARGUMENT),
            ("alice@unowned.example", PASSWORD, grpc.StatusCode.NOT_FOUND),
        ],
        ids=[
            "empty-user",
            "empty-password",
            "no-domain",
            "no-local-part",
            "bad-domain",
            "long-user",
            "long-password",
            "control-char",
            "unowned-domain",
        ],
    )
    def test_refused_with_status(
        self, broker: BrokerProcess, username: str, password: str, status: grpc.StatusCode
    ) -> None:
        """The status names the problem; the broker answers the next sign-in normally."""
        with pytest.raises(grpc.RpcError) as caught:
            broker.sign_in(username, password)
        assert caught.value.code() == status
        assert caught.value.details()
        assert broker.sign_in(f"alice@{DOMAIN}", USERS["alice"]).outcome == Outcome.SUCCESS

    def test_bad_client_ip(self, broker: BrokerProcess) -> None:
        """A client IP that is not an address is INVALID_ARGUMENT."""
        with pytest.raises(grpc.RpcError) as caught:
            broker.sign_in(f"alice@{DOMAIN}", USERS["alice"], client_ip="not-an-ip")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def test_invalid_utf8_is_invalid_argument(self, broker: BrokerProcess) -> None:
        """Invalid UTF-8 in a string field is refused, not an internal error."""
        password = PASSWORD.encode()
        payload = b"\x0a\x04\xff\xfe\xfd\xfc\x12" + bytes([len(password)]) + password
        assert _raw_call(broker, payload) == grpc.StatusCode.INVALID_ARGUMENT

    def test_truncated_message_is_invalid_argument(self, broker: BrokerProcess) -> None:
        """A message cut short is refused."""
        good = signin_pb2.SignInRequest(
            username=f"alice@{DOMAIN}", password=PASSWORD
        ).SerializeToString()
        assert _raw_call(broker, good[:-3]) == grpc.StatusCode.INVALID_ARGUMENT

    def test_oversized_message_is_resource_exhausted(self, broker: BrokerProcess) -> None:
        """A message over the size cap is refused before it is parsed."""
        payload = signin_pb2.SignInRequest(
            username=f"alice@{DOMAIN}", password=secret("x" * (100 * 1024))
        ).SerializeToString()
        assert _raw_call(broker, payload) == grpc.StatusCode.RESOURCE_EXHAUSTED

    def test_still_serving_after_all_that(self, broker: BrokerProcess) -> None:
        """After every bad request above, sign-ins still work."""
        assert broker.sign_in(f"carol@{DOMAIN}", USERS["carol"]).outcome == Outcome.SUCCESS


def _complete(broker: BrokerProcess, challenge_id: str, code: str) -> grpc.StatusCode:
    with broker.channel() as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/pta.v1.SignInService/CompleteMfa"
        )
        request = signin_pb2.CompleteMfaRequest(challenge_id=challenge_id, code=code)
        with pytest.raises(grpc.RpcError) as caught:
            call(request.SerializeToString(), timeout=10)
    code_: grpc.StatusCode = caught.value.code()
    return code_


class TestBadMfaInput:
    """CompleteMfa refuses malformed or unknown challenges with a clear status."""

    @pytest.mark.parametrize(
        ("challenge_id", "code", "status"),
        [
            ("", CODE, grpc.StatusCode.INVALID_ARGUMENT),
            ("c" * 65, CODE, grpc.StatusCode.INVALID_ARGUMENT),
            ("made-up", known("12345"), grpc.StatusCode.INVALID_ARGUMENT),
            ("made-up", known("12345a"), grpc.StatusCode.INVALID_ARGUMENT),
            ("made-up", known("\uff11" * 6), grpc.StatusCode.INVALID_ARGUMENT),  # fullwidth one
            ("made-up", CODE, grpc.StatusCode.FAILED_PRECONDITION),
            ("x" * (100 * 1024), CODE, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ],
        ids=["no-id", "long-id", "short-code", "letter", "fullwidth-digits", "unknown", "huge"],
    )
    def test_refused_with_status(
        self, broker: BrokerProcess, challenge_id: str, code: str, status: grpc.StatusCode
    ) -> None:
        """Each gets its status, and the broker keeps serving."""
        assert _complete(broker, challenge_id, code) == status
        assert broker.sign_in(f"bob@{DOMAIN}", USERS["bob"]).outcome == Outcome.SUCCESS
