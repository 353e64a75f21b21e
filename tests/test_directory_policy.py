"""Agents tell the broker their directories' lockout thresholds: real slapd, processes, mTLS."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import grpc
import pytest

from pta.v1 import agent_pb2, agent_pb2_grpc, outcome_pb2
from tests.conftest import DOMAIN, USERS
from tests.support import AgentProcess, BrokerProcess, agent_credentials, wait_for
from tooling.slapd import DirectoryUser, Slapd, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TENANT = "lockpol"
MISSING_DN = "cn=missing,ou=policies,dc=example,dc=com"
DOMAINS = {"named.example", "nolock.example", "nopolicy.example", "missing.example", "down.example"}


@pytest.fixture(scope="module")
def unlocking_slapd() -> Iterator[Slapd]:
    """A directory whose password policy counts failures but never locks."""
    users = [DirectoryUser(uid="alice", password=USERS["alice"])]
    with Slapd(users=users, policy={"pwdLockout": "FALSE"}) as server:
        yield server


@pytest.fixture(scope="module")
def policy_agent(
    broker: BrokerProcess, slapd: Slapd, unlocking_slapd: Slapd, run_dir: Path
) -> Iterator[AgentProcess]:
    """One agent of tenant ``lockpol`` serving a domain per kind of policy (TOML config)."""
    broker.add_tenant(TENANT, *sorted(DOMAINS))
    tables = [
        ("named.example", slapd.url, slapd.base_dn, slapd.policy_dn),
        ("nolock.example", unlocking_slapd.url, unlocking_slapd.base_dn, ""),
        ("nopolicy.example", slapd.url, slapd.people_dn, ""),  # No policy under this base.
        ("missing.example", slapd.url, slapd.base_dn, MISSING_DN),
        ("down.example", f"ldap://127.0.0.1:{free_port()}", slapd.base_dn, ""),
    ]
    config = run_dir / "agent-lockpol.toml"
    config.write_text(
        "".join(
            f'[[directory]]\ndomains = ["{domain}"]\nurls = ["{url}"]\nbase_dn = "{base}"\n'
            + (f'password_policy_dn = "{policy}"\n' if policy else "")
            + "\n"
            for domain, url, base, policy in tables
        )
    )
    agent = AgentProcess.start(broker, None, TENANT, "agent-lockpol", "--config", str(config))
    yield agent
    agent.stop()


class TestReported:
    """After its welcome, each agent's report reaches the broker's store, per domain."""

    def test_session_agent_reports_default_policy(
        self, broker: BrokerProcess, agent: AgentProcess, slapd: Slapd
    ) -> None:
        """The suite's slapd locks after 5 failures (pwdMaxFailure on its default policy)."""
        (policy,) = broker.wait_for_policies("acme", agent.agent_id, {DOMAIN}).values()
        assert (policy.known, policy.lockout_threshold) == (True, 5)
        assert policy.source == f"pwdMaxFailure on {slapd.policy_dn}"
        events = [
            e
            for e in broker.log_events("directory.policy_reported")
            if e["agent_id"] == agent.agent_id
        ]
        assert events[0] | {"timestamp": None, "level": None} == {
            "event": "directory.policy_reported",
            "tenant": "acme",
            "agent_id": agent.agent_id,
            "domain": DOMAIN,
            "known": True,
            "lockout_threshold": 5,
            "timestamp": None,
            "level": None,
        }

    @pytest.mark.parametrize(
        ("domain", "expected"),
        [
            ("named.example", (True, 5, "pwdMaxFailure on cn=default,ou=policies,dc=example")),
            ("nolock.example", (True, 0, "pwdLockout FALSE on cn=default,ou=policies")),
            ("nopolicy.example", (False, 0, "no readable pwdPolicy entry")),
            ("missing.example", (False, 0, f"noSuchObject reading {MISSING_DN}")),
            ("down.example", (False, 0, "could not read")),
        ],
        ids=["named-policy-dn", "pwdlockout-false", "no-policy", "missing-policy-dn", "down"],
    )
    def test_each_directory(
        self,
        broker: BrokerProcess,
        policy_agent: AgentProcess,
        domain: str,
        expected: tuple[bool, int, str],
    ) -> None:
        """Each domain's directory is read with its own settings; failures are unknown."""
        known, threshold, source = expected
        policy = broker.wait_for_policies(TENANT, policy_agent.agent_id, DOMAINS)[domain]
        assert (policy.known, policy.lockout_threshold) == (known, threshold)
        assert source in policy.source

    def test_unknown_policies_cost_no_sign_in(
        self, broker: BrokerProcess, policy_agent: AgentProcess
    ) -> None:
        """Domains whose policy is unknown still sign users in."""
        broker.wait_for_policies(TENANT, policy_agent.agent_id, DOMAINS)
        for domain in ("nopolicy.example", "missing.example", "nolock.example"):
            reply = broker.sign_in(f"alice@{domain}", USERS["alice"])
            assert reply.outcome == outcome_pb2.SUCCESS
        sent = [
            json.loads(line)
            for line in policy_agent.log_path.read_text().splitlines()
            if "directory.policy_sent" in line
        ]
        assert {e["domain"] for e in sent} == DOMAINS, "sent once per domain, then not again"
        assert len(sent) == len(DOMAINS)


async def _next_broker_message(
    call: grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.BrokerMessage],
) -> agent_pb2.BrokerMessage:
    message = await call.read()
    assert isinstance(message, agent_pb2.BrokerMessage)
    return message


def _policy(domain: str, threshold: int, source: str = "test") -> agent_pb2.DirectoryPolicy:
    return agent_pb2.DirectoryPolicy(
        domain=domain, known=True, lockout_threshold=threshold, source=source
    )


class TestBounds:
    """Whatever an agent's report holds, the broker keeps only what it may, and serves on."""

    @pytest.mark.usefixtures("policy_agent")
    async def test_hostile_report_over_a_real_stream(
        self, broker: BrokerProcess, run_dir: Path
    ) -> None:
        """Foreign, garbage, duplicate, oversized and too-frequent reports: the stream lives."""
        state = run_dir / "agent-lockpol-raw"
        AgentProcess.enrol(broker, TENANT, state)
        agent_id = json.loads((state / "agent.json").read_text())["agent_id"]
        first = [
            _policy(DOMAIN, 1),  # Another tenant's domain.
            _policy("not a domain!", 1),
            _policy("named.example", 7, "s" * 100_000),
            _policy("named.example", 1),  # A duplicate: the first wins.
            *(_policy(f"d{i}.example", 1) for i in range(70)),
            _policy("nolock.example", 2),  # Past the cap of 64: never looked at.
        ]
        async with grpc.aio.secure_channel(broker.agent, agent_credentials(state)) as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            hello = agent_pb2.Hello(
                agent_id=agent_id, domains=["named.example", "nolock.example"], max_in_flight=1
            )
            await call.write(agent_pb2.AgentMessage(hello=hello))
            assert (await _next_broker_message(call)).HasField("welcome")
            for report in (first, [_policy("named.example", 2)]):  # The second is too soon.
                message = agent_pb2.DirectoryReport(policies=report)
                await call.write(agent_pb2.AgentMessage(directory_report=message))
            kept = await asyncio.to_thread(
                broker.wait_for_policies, TENANT, agent_id, {"named.example"}
            )
            await asyncio.sleep(1.1)  # Past MIN_REPORT_INTERVAL: the next report counts.
            third = agent_pb2.DirectoryReport(policies=[_policy("nolock.example", 3)])
            await call.write(agent_pb2.AgentMessage(directory_report=third))
            latest = await asyncio.to_thread(
                broker.wait_for_policies, TENANT, agent_id, {"nolock.example"}
            )
            call.cancel()
        named = kept["named.example"]
        assert named.lockout_threshold == 7
        assert named.source == "s" * 256
        assert latest["nolock.example"].lockout_threshold == 3

        def logged(event: str) -> list[dict[str, object]]:
            return [e for e in broker.log_events(event) if e.get("agent_id") == agent_id]

        (foreign,) = logged("directory.foreign_domains_reported")
        assert foreign["count"] == 62  # Of the first 64: all but the two named.example.
        assert logged("directory.report_truncated")[0]["policies"] == len(first)
        assert len(logged("directory.report_too_soon")) == 1
        assert not logged("directory.report_failed")
        await asyncio.to_thread(wait_for, lambda: logged("agent.disconnected"))
        assert logged("agent.disconnected")[0]["reason"] == "stream ended"
