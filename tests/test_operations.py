"""What an operator and a script see: grpcurl with reflection and health, and ``pta-signin``."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pta.v1 import outcome_pb2
from tests.conftest import DOMAIN, USERS
from tests.secrets_registry import secret
from tests.support import BIN, AgentProcess, BrokerProcess, signin_cli

Outcome = outcome_pb2.Outcome


def grpcurl(broker: BrokerProcess, *args: str, data: str | None = None) -> str:
    """Run the real grpcurl binary against the public endpoint, trusting the broker's CA."""
    command = [str(BIN / "grpcurl"), "-cacert", str(broker.ca_file)]
    if data is not None:
        command += ["-d", data]
    result = subprocess.run(
        [*command, broker.public, *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _json_stream(text: str) -> list[dict[str, list[dict[str, Any]]]]:
    """The JSON objects grpcurl printed one after the other (one per stream message)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = end + len(text[end:]) - len(text[end:].lstrip())
    return found


class TestGrpcurl:
    """Reflection and health are always on; grpcurl needs nothing but the CA file."""

    def test_list_services(self, broker: BrokerProcess) -> None:
        """``grpcurl list`` shows the contract, health and reflection."""
        services = grpcurl(broker, "list").split()
        assert {"pta.v1.SignInService", "pta.v1.AgentService", "grpc.health.v1.Health"} <= set(
            services
        )

    def test_describe_service(self, broker: BrokerProcess) -> None:
        """``grpcurl describe`` shows the SignIn method and its messages."""
        text = grpcurl(broker, "describe", "pta.v1.SignInService")
        assert "rpc SignIn ( .pta.v1.SignInRequest ) returns ( .pta.v1.SignInResponse )" in text
        assert (
            "rpc SignInStream ( stream .pta.v1.SignInBatch ) "
            "returns ( stream .pta.v1.SignInAnswers )" in text
        )
        assert "string username" in grpcurl(broker, "describe", "pta.v1.SignInRequest")

    def test_health_check(self, broker: BrokerProcess) -> None:
        """The standard health service reports SERVING, overall and per service."""
        assert json.loads(grpcurl(broker, "grpc.health.v1.Health/Check"))["status"] == "SERVING"
        body = json.dumps({"service": "pta.v1.SignInService"})
        reply = grpcurl(broker, "grpc.health.v1.Health/Check", data=body)
        assert json.loads(reply)["status"] == "SERVING"

    @pytest.mark.usefixtures("agent")
    def test_sign_in_with_grpcurl(self, broker: BrokerProcess) -> None:
        """A sign-in works from grpcurl with JSON in and out."""
        body = json.dumps({"username": f"alice@{DOMAIN}", "password": USERS["alice"]})
        reply = json.loads(grpcurl(broker, "pta.v1.SignInService/SignIn", data=body))
        assert reply["outcome"] == "SUCCESS"
        assert reply["request_id"]  # grpcurl prints the proto's own field names

    @pytest.mark.usefixtures("agent")
    def test_sign_in_stream_with_grpcurl(self, broker: BrokerProcess) -> None:
        """The stream works from grpcurl too: messages in, answers by id out, then OK."""
        items = [
            {"id": "1", "request": {"username": f"bob@{DOMAIN}", "password": USERS["bob"]}},
            {"id": "2", "request": {"username": "bob", "password": USERS["bob"]}},
        ]
        body = json.dumps({"items": items})
        reply = grpcurl(broker, "pta.v1.SignInService/SignInStream", data=body)
        answers = {a["id"]: a for message in _json_stream(reply) for a in message["answers"]}
        assert answers["1"]["response"]["outcome"] == "SUCCESS"
        assert answers["2"]["status"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


class TestAgentEndpoint:
    """The agent endpoint answers health to an agent's certificate."""

    def test_health_with_agent_certificate(
        self, broker: BrokerProcess, agent: AgentProcess
    ) -> None:
        """An enrolled agent's certificate passes the agent endpoint's TLS."""
        with grpc.secure_channel(broker.agent, agent.credentials()) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="pta.v1.AgentService"), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.usefixtures("agent")
class TestSigninCli:
    """``pta-signin`` prints the outcome and exits with a documented code per outcome."""

    @pytest.mark.parametrize(
        ("username", "password", "code", "printed"),
        [
            (f"alice@{DOMAIN}", USERS["alice"], 0, "SUCCESS"),
            (f"alice@{DOMAIN}", secret("wrong-cli-pw"), 10, "INVALID_CREDENTIALS"),
            ("alice@unowned.example", secret("pw-cli"), 23, "NOT_FOUND"),
            ("alice", secret("pw-cli"), 22, "INVALID_ARGUMENT"),
        ],
        ids=["success", "wrong-password", "unknown-domain", "malformed"],
    )
    def test_exit_codes(
        self, broker: BrokerProcess, username: str, password: str, code: int, printed: str
    ) -> None:
        """Each outcome and status has its own exit code."""
        result = signin_cli(broker, username, password + "\n")
        assert result.returncode == code, result.stderr
        assert printed in result.stdout + result.stderr

    def test_json_output(self, broker: BrokerProcess) -> None:
        """``--json`` prints the response as JSON."""
        result = signin_cli(broker, f"bob@{DOMAIN}", USERS["bob"] + "\n", "--json")
        reply = json.loads(result.stdout)
        assert reply["outcome"] == "SUCCESS"
        assert reply["request_id"]
        assert result.returncode == 0
