"""An agent lost after it acknowledged a sign-in: sent on within the directory's lockout.

A stream played by the test takes a sign-in, acknowledges it (so it may have tried the
password) and dies; a real agent of the tenant is connected too. The directory (slapd,
locking after 5 wrong passwords) is the bound: the sign-in goes to the real agent when a
second try leaves the directory one short of its lockout, and is answered UNAVAILABLE when it
does not — and slapd never locks the account either way.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import grpc
import ldap3
import pytest

from pta.v1 import agent_pb2, outcome_pb2
from tests.conftest import USERS
from tests.raw_agent import RawStream, enrolled
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess, agent_credentials, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

Outcome = outcome_pb2.Outcome
TENANT = "lost"
DOMAIN = "lost.example"


@pytest.fixture(scope="module")
def lossy(run_dir: Path) -> Iterator[BrokerProcess]:
    """A broker of its own with tenant ``lost``."""
    broker = BrokerProcess.start(run_dir, "broker-lost")
    broker.add_tenant(TENANT, DOMAIN)
    yield broker
    broker.stop()


def _connected_times(broker: BrokerProcess, agent_id: str) -> int:
    return sum(e.get("agent_id") == agent_id for e in broker.log_events("agent.connected"))


def _attach_fake_first(
    broker: BrokerProcess, slapd: Slapd, tmp_path: Path, genuine: AgentProcess
) -> tuple[RawStream, str]:
    """Stop the genuine agent, attach the test's stream, bring the genuine one back after it.

    With both idle, a new sign-in goes to the connection attached first: the test's.
    """
    genuine.stop()
    fake_id = enrolled(broker, TENANT, tmp_path / "fake")
    fake = RawStream(broker, agent_credentials(tmp_path / "fake"))
    fake.hello(fake_id)
    wait_for(lambda: fake.welcomed, what="the test's stream to be welcomed")
    before = _connected_times(broker, genuine.agent_id)
    genuine.process = AgentProcess.launch(genuine.state_dir, slapd, genuine.log_path)
    wait_for(
        lambda: _connected_times(broker, genuine.agent_id) > before,
        what="the genuine agent to connect again",
    )
    return fake, fake_id


def _hold_ack_and_die(
    broker: BrokerProcess, fake: RawStream, fake_id: str, username: str, password: str
) -> tuple[list[int], list[grpc.RpcError]]:
    """Sign in once; the test's stream acknowledges the sign-in and dies; return the answer."""
    answers: list[int] = []
    errors: list[grpc.RpcError] = []

    def sign_in() -> None:
        try:
            answers.append(broker.sign_in(username, password, timeout=20).outcome)
        except grpc.RpcError as error:
            errors.append(error)

    signer = threading.Thread(target=sign_in)
    signer.start()
    wait_for(fake.validations, what="the sign-in to reach the test's stream")
    (request,) = fake.validations()
    fake.send(agent_pb2.AgentMessage(acks=agent_pb2.Acks(request_ids=[request.request_id])))
    # A stream's messages are read in order: once the broker logs this report, it has read
    # the acknowledgement before it.
    fake.send(
        agent_pb2.AgentMessage(
            directory_report=agent_pb2.DirectoryReport(
                policies=[
                    agent_pb2.DirectoryPolicy(
                        domain=DOMAIN, known=True, lockout_threshold=5, source="test"
                    )
                ]
            )
        )
    )
    wait_for(
        lambda: any(
            e.get("agent_id") == fake_id for e in broker.log_events("directory.policy_reported")
        ),
        what="the broker to read the acknowledgement",
    )
    fake.close()  # Dies having acknowledged: it may have tried the password.
    signer.join(25)
    assert not signer.is_alive(), "the sign-in got no answer"
    return answers, errors


def _binds_at_slapd(slapd: Slapd, uid: str, password: str) -> bool:
    """Bind straight at slapd (a success also clears its count of failures)."""
    server = ldap3.Server(slapd.url, get_info=ldap3.NONE)
    with ldap3.Connection(server, user=slapd.user_dn(uid), password=password) as conn:
        return bool(conn.bound)


@pytest.fixture
def genuine(lossy: BrokerProcess, slapd: Slapd, tmp_path: Path) -> Iterator[AgentProcess]:
    """A real agent of tenant ``lost``, its directory's threshold reported."""
    agent = AgentProcess.start(lossy, slapd, TENANT, f"agent-lost-{tmp_path.name}")
    lossy.wait_for_policies(TENANT, agent.agent_id, {DOMAIN})
    yield agent
    agent.stop()


class TestLostAfterAck:
    """Sent on when the directory's lockout has room; UNAVAILABLE when it has not."""

    def test_sent_to_another_agent(
        self, lossy: BrokerProcess, slapd: Slapd, tmp_path: Path, genuine: AgentProcess
    ) -> None:
        """Nothing in the directory's count: the second try has room; the real agent answers."""
        fake, fake_id = _attach_fake_first(lossy, slapd, tmp_path, genuine)
        answers, errors = _hold_ack_and_die(lossy, fake, fake_id, f"bob@{DOMAIN}", USERS["bob"])
        assert errors == []
        assert answers == [Outcome.SUCCESS]
        (lost,) = lossy.log_events("signin.agent_lost_while_checking")
        assert lost["agent_id"] == fake_id

    def test_unavailable_without_room(
        self, lossy: BrokerProcess, slapd: Slapd, tmp_path: Path, genuine: AgentProcess
    ) -> None:
        """Three wrong in the directory's count, one lost: a second try could be the 5th.

        From a familiar network (carol signed in from here) the guard lets at most 4 wrong
        passwords be in the directory's count: 3 refused plus the lost try make 4, so the
        sign-in is answered UNAVAILABLE rather than tried again, and slapd still lets carol in.
        """
        user = f"carol@{DOMAIN}"
        assert lossy.sign_in(user, USERS["carol"]).outcome == Outcome.SUCCESS
        for n in range(3):
            wrong = secret(f"Carol-wrong-{n}")
            assert lossy.sign_in(user, wrong).outcome == Outcome.INVALID_CREDENTIALS
        fake, fake_id = _attach_fake_first(lossy, slapd, tmp_path, genuine)
        held = secret("Carol-wrong-held")
        answers, errors = _hold_ack_and_die(lossy, fake, fake_id, user, held)
        assert answers == []
        (error,) = errors
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "could lock the account" in str(error.details())
        assert _binds_at_slapd(slapd, "carol", USERS["carol"])
