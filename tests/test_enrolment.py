"""Enrolment and the agent endpoint: tokens work once, trust is pinned, certificates are checked."""

from __future__ import annotations

import datetime
import stat
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from broker.trust.ca import CertificateAuthority
from pta import sealing, tls
from pta.v1 import agent_pb2, agent_pb2_grpc
from tests.secrets_registry import known
from tests.support import AgentProcess, BrokerProcess, enrol_cli

if TYPE_CHECKING:
    from pathlib import Path


_enrol = enrol_cli


class TestTokens:
    """A token enrols one agent, once, before it expires, with the broker it pins."""

    def test_token_works_once(self, broker: BrokerProcess, tmp_path: Path) -> None:
        """The second use of a token is refused and enrols nothing."""
        token = broker.token("acme")
        assert _enrol(broker, token, tmp_path / "first").returncode == 0
        again = _enrol(broker, token, tmp_path / "second")
        assert again.returncode == 1
        assert "unknown, used or expired" in again.stderr
        assert not (tmp_path / "second" / "agent.json").exists()

    def test_expired_token_is_refused(self, broker: BrokerProcess, tmp_path: Path) -> None:
        """A token past its TTL is refused."""
        token = broker.token("acme", ttl="1s")
        time.sleep(1.2)
        result = _enrol(broker, token, tmp_path / "late")
        assert result.returncode == 1
        assert "unknown, used or expired" in result.stderr

    @pytest.mark.parametrize(
        "token",
        [
            "",
            known("pta1"),
            known("pta1.zz.zz.zz"),
            known("pta2." + "0" * 16 + "." + "a" * 43 + "." + "0" * 64),
        ],
        ids=["empty", "prefix-only", "short-parts", "wrong-version"],
    )
    def test_malformed_token_is_refused(
        self, broker: BrokerProcess, tmp_path: Path, token: str
    ) -> None:
        """A malformed token is refused with a message that does not echo it."""
        result = _enrol(broker, token, tmp_path / "bad")
        assert result.returncode == 1
        assert "malformed enrolment token" in result.stderr

    def test_token_pinning_another_ca_is_refused(
        self, broker: BrokerProcess, tmp_path: Path
    ) -> None:
        """The agent sends nothing to a broker whose CA is not the one the token pins."""
        token = broker.token("acme")
        forged = token.rsplit(".", 1)[0] + "." + "0" * 64
        result = _enrol(broker, forged, tmp_path / "pinned")
        assert result.returncode == 1
        assert "does not present the CA this token pins" in result.stderr
        # The real token was not spent by the attempt.
        assert _enrol(broker, token, tmp_path / "real").returncode == 0

    def test_token_list_and_delete(self, broker: BrokerProcess) -> None:
        """Tokens are listed without secrets and can be deleted before use."""
        token = broker.token("acme")
        token_id, secret = token.split(".")[1:3]
        listing = broker.cli("token", "list").stdout
        assert token_id in listing
        assert secret not in listing
        broker.cli("token", "delete", token_id)
        assert token_id not in broker.cli("token", "list").stdout


class TestEnrollRpc:
    """The Enroll RPC refuses bad requests without spending the token."""

    def _call(self, broker: BrokerProcess, request: agent_pb2.EnrollRequest) -> grpc.RpcError:
        with broker.channel() as channel, pytest.raises(grpc.RpcError) as caught:
            agent_pb2_grpc.AgentServiceStub(channel).Enroll(request, timeout=10)
        return caught.value

    def test_bad_csr_keeps_token(self, broker: BrokerProcess, tmp_path: Path) -> None:
        """A malformed CSR is INVALID_ARGUMENT and the token still works afterwards."""
        token = broker.token("acme")
        error = self._call(
            broker,
            agent_pb2.EnrollRequest(
                token=token,
                csr_pem="not a csr",
                envelope_public_key=sealing.public_key_bytes(sealing.generate_key()),
            ),
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _enrol(broker, token, tmp_path / "after").returncode == 0

    def test_bad_envelope_key_is_refused(self, broker: BrokerProcess) -> None:
        """An envelope key that is not 32 bytes is INVALID_ARGUMENT."""
        key = tls.new_private_key()
        error = self._call(
            broker,
            agent_pb2.EnrollRequest(
                token=broker.token("acme"),
                csr_pem=tls.make_csr(key, "x").decode(),
                envelope_public_key=b"short",
            ),
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestConnect:
    """Only certificates the broker issued to an enrolled agent may hold a stream."""

    def test_connect_without_certificate_is_unauthenticated(self, broker: BrokerProcess) -> None:
        """On the public endpoint, Connect answers UNAUTHENTICATED and says where to go."""
        with broker.channel() as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(
                iter([agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="x"))]), timeout=10
            )
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "agent endpoint" in str(caught.value.details())

    def test_foreign_ca_certificate_never_reaches_a_handler(
        self, broker: BrokerProcess, tmp_path: Path
    ) -> None:
        """A client certificate from another CA fails the TLS handshake on the agent endpoint."""
        other = CertificateAuthority.load_or_create(tmp_path)
        key = tls.new_private_key()
        cert = other.sign_agent(
            tls.make_csr(key, "x").decode(),
            tenant="acme",
            agent_id="agt-forged",
            lifetime=datetime.timedelta(hours=1),
        )
        creds = tls.channel_credentials(
            broker.ca_file.read_bytes(), tls.key_pem(key), tls.cert_pem(cert)
        )
        with grpc.secure_channel(broker.agent, creds) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(
                iter([agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="agt-forged"))]),
                timeout=5,
            )
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not any(
            e.get("agent_id") == "agt-forged" for e in broker.log_events("agent.connected")
        )

    def test_hello_for_another_agent_is_refused(
        self, broker: BrokerProcess, agent: AgentProcess
    ) -> None:
        """An agent's certificate cannot open a stream in another agent's name."""
        with grpc.secure_channel(broker.agent, agent.credentials()) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(
                iter([agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="agt-someone-else"))]),
                timeout=10,
            )
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


class TestFiles:
    """Private keys are readable by their owner only."""

    @pytest.mark.parametrize("name", ["ca.key", "server.key", "pta.sqlite3"])
    def test_broker_private_files(self, broker: BrokerProcess, name: str) -> None:
        """The CA key, the server key and the store are 0600."""
        mode = stat.S_IMODE((broker.data_dir / name).stat().st_mode)
        assert mode == 0o600

    @pytest.mark.parametrize("name", ["tls.key", "envelope.key"])
    def test_agent_private_files(self, agent: AgentProcess, name: str) -> None:
        """The agent's TLS and envelope keys are 0600, in a 0700 directory."""
        assert stat.S_IMODE((agent.state_dir / name).stat().st_mode) == 0o600
        assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
