"""The broker stops gracefully and comes back: agents reconnect, nothing persistent is lost."""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import signal
from typing import TYPE_CHECKING

import grpc

from pta.v1 import outcome_pb2
from tests.secrets_registry import secret
from tests.support import AgentProcess, BrokerProcess, wait_for
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from pathlib import Path

Outcome = outcome_pb2.Outcome
#: Sign-ins held at the agent (by a stopped directory) when the broker is told to stop; one
#: user each, so that no user's lockout budget holds any of them back at the broker.
HELD = 4
USERS = {f"held{n}": secret(f"Held-pw-{n}!") for n in range(HELD)}


def _attempt(broker: BrokerProcess, uid: str = "held0") -> tuple[str, str]:
    """Sign ``uid`` in once: the outcome's or the status's name, and the request id."""
    try:
        reply = broker.sign_in(f"{uid}@restart.example", USERS[uid], timeout=30)
    except grpc.RpcError as error:
        return str(error.code().name), ""
    return str(Outcome.Name(reply.outcome)), reply.request_id


def _at(event: dict[str, object]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(str(event["timestamp"]))


def _checked(event: dict[str, object]) -> tuple[datetime.datetime, datetime.datetime]:
    """When the agent began and finished checking, from its ``validation.completed``."""
    done = _at(event)
    return done - datetime.timedelta(milliseconds=float(str(event["duration_ms"]))), done


class TestBrokerRestart:
    """SIGTERM, then the same data directory and ports again."""

    def test_stop_and_come_back(self, run_dir: Path) -> None:
        """Sign-ins in flight at the agent are answered before the broker exits; then it's back.

        The directory is stopped (SIGSTOP), so the sign-ins wait at the agent, provably: the
        broker reports them there before it is signalled, and the agent's log shows each one
        checked from before the broker began stopping until after.
        """
        ports = (
            *("--listen", f"127.0.0.1:{free_port()}"),
            *("--agent-listen", f"127.0.0.1:{free_port()}"),
        )
        stopping = ("--grace", "30", "--signin-timeout", "30s")
        users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
        with Slapd(users=users) as directory:
            assert directory.pid is not None
            broker = BrokerProcess.start(run_dir, "broker-restart", *ports, *stopping)
            broker.add_tenant("restart", "restart.example")
            config = run_dir / "agent-restart.toml"  # Binds wait 30 s for a stopped directory.
            config.write_text(
                f'[[directory]]\nurls = ["{directory.url}"]\nbase_dn = "{directory.base_dn}"\n'
                "receive_timeout = 30\n"
            )
            agent = AgentProcess.start(
                broker, None, "restart", "agent-restart", "--config", str(config), log_level="debug"
            )
            try:
                assert [_attempt(broker, uid)[0] for uid in USERS] == ["SUCCESS"] * HELD
                os.kill(directory.pid, signal.SIGSTOP)
                try:
                    with concurrent.futures.ThreadPoolExecutor(HELD) as pool:
                        held = [pool.submit(_attempt, broker, uid) for uid in USERS]
                        broker.wait_in_flight(agent.agent_id, HELD)
                        broker.process.send_signal(signal.SIGTERM)
                        wait_for(lambda: broker.log_events("broker.stopping"), what="stopping")
                        late, _ = _attempt(broker)
                        os.kill(directory.pid, signal.SIGCONT)
                        answers = [f.result(timeout=40) for f in held]
                finally:
                    os.kill(directory.pid, signal.SIGCONT)
                assert broker.process.wait(15) == 0
                # Held at the agent while the broker began to stop, and answered all the same.
                assert [outcome for outcome, _ in answers] == ["SUCCESS"] * HELD
                # A sign-in that came once it was stopping was refused, at once and clearly
                # (UNAVAILABLE, or CANCELLED when the connection closed before the call began).
                assert late in {"UNAVAILABLE", "CANCELLED"}
                stopping_at = _at(broker.log_events("broker.stopping")[0])
                checked = {
                    str(e["request_id"]): e for e in agent.log_events("validation.completed")
                }
                for _, request_id in answers:
                    began, done = _checked(checked[request_id])
                    assert began < stopping_at < done, (began, stopping_at, done)
                # Every sign-in the broker accepted was answered before it exited.
                accepted = [e for e in broker.log_events("signin.completed") if e["status"] == "OK"]
                assert len(accepted) == 2 * HELD

                connected_before = len(broker.log_events("agent.connected"))
                broker = BrokerProcess.start(run_dir, "broker-restart", *ports, *stopping)
                wait_for(
                    lambda: len(broker.log_events("agent.connected")) > connected_before,
                    timeout=40,
                    what="the agent to reconnect to the restarted broker",
                )
                assert _attempt(broker)[0] == "SUCCESS"
                assert "restart" in broker.cli("tenant", "list").stdout
                assert agent.process.poll() is None, "the agent kept running throughout"
            finally:
                agent.stop()
                broker.stop()
