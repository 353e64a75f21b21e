"""A broker serving on PostgreSQL (``--store``): sign-ins, the CLI beside it, the CA it claims.

Real processes throughout: the session's PostgreSQL, a ``pta-broker serve --store URL`` process,
a real agent checking passwords in slapd, and ``pta-broker … --store URL`` commands run while
the broker serves. The URL carries a password (the test cluster trusts 127.0.0.1 and ignores
it), registered with the secrets registry so the final scan proves it reached no log or file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import grpc
import psycopg
import pytest

from broker.maintenance import MAINTENANCE_TICK as TICK
from broker.store.postgres.db import CALL_TIMEOUT, UNAVAILABLE
from broker.store.postgres.schema import MIGRATIONS
from pta.v1 import outcome_pb2
from tests.conftest import USERS
from tests.raw_agent import RawStream, enrolled
from tests.secrets_registry import secret
from tests.support import (
    BIN,
    AgentProcess,
    BrokerProcess,
    agent_credentials,
    one_line,
    refused_serve,
    wait_for,
)
from tooling.postgres import Postgres, postgres_missing_reason

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

REASON = postgres_missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
Outcome = outcome_pb2.Outcome
#: What the docs promise: an operator's change reaches a serving broker within a tick or so,
#: and a revocation every live stream within a second.
TICK_BOUND = 1.0
REVOCATION_BOUND = 1.0
#: A sign-in while PostgreSQL is down is refused within this.
FAST = 1.0
TENANT, DOMAIN = "shared", "shared.example"


def _with_password(url: str, password: str) -> str:
    return url.replace("pta@", f"pta:{password}@", 1)


@pytest.fixture(scope="module")
def store_url(postgres: Postgres) -> str:
    """A database of its own for this module's cluster, by a URL holding a password."""
    return _with_password(postgres.new_database("shared_store"), secret("storepw"))


@pytest.fixture(scope="module")
def first(run_dir: Path, store_url: str) -> Iterator[BrokerProcess]:
    """A broker serving the store, with tenant ``shared``: the first, so its CA is claimed."""
    broker = BrokerProcess.start(run_dir, "broker-pg-1", store=store_url)
    broker.add_tenant(TENANT, DOMAIN)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def agent(first: BrokerProcess, slapd: Slapd) -> Iterator[AgentProcess]:
    """An agent of ``shared``, enrolled with a token the CLI made in the store, connected."""
    process = AgentProcess.start(first, slapd, TENANT, "agent-pg")
    yield process
    process.stop()


class TestServing:
    """Sign-ins through a broker whose store is PostgreSQL, and the CLI beside it."""

    def test_sign_ins(self, first: BrokerProcess, agent: AgentProcess) -> None:
        """A right password signs in, a wrong one is refused; the counters are in the store."""
        assert first.sign_in(f"alice@{DOMAIN}", USERS["alice"]).outcome == Outcome.SUCCESS
        wrong = first.sign_in(f"bob@{DOMAIN}", secret("Wrong-pg-1"))
        assert wrong.outcome == Outcome.INVALID_CREDENTIALS
        listed = json.loads(first.cli("lockout", "list", "--tenant", TENANT, "--json").stdout)
        assert [row["failures"] for row in listed if row["location"] == "unfamiliar"] == [1]
        assert first.cli("lockout", "clear", "--tenant", TENANT, f"bob@{DOMAIN}").returncode == 0
        assert agent.process.poll() is None

    def test_a_new_tenant_is_served_within_a_tick(self, first: BrokerProcess) -> None:
        """`tenant add` through the store: the broker knows the domain within a tick."""
        password = secret("Late-pw-1")
        with pytest.raises(grpc.RpcError) as unknown:
            first.sign_in("alice@late.example", password)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        first.add_tenant("late", "late.example")
        added = time.monotonic()

        def known() -> bool:
            try:
                first.sign_in("alice@late.example", password)
            except grpc.RpcError as error:  # No agent yet: UNAVAILABLE, not NOT_FOUND.
                return error.code() == grpc.StatusCode.UNAVAILABLE
            return True

        wait_for(known, timeout=5, what="the new tenant")
        seen = time.monotonic() - added
        print(f"\nshared store: a new tenant served {seen:.3f} s after the CLI")  # noqa: T201
        assert seen <= TICK_BOUND

    def test_management_commands(self, first: BrokerProcess, agent: AgentProcess) -> None:
        """Every kind of command works against the store; the agent is listed with its broker."""
        assert json.loads(first.cli("tenant", "list", "--json").stdout)[TENANT] == [DOMAIN]
        first.cli("tenant", "policy", TENANT, "--lockout-threshold", "7")
        first.cli("tenant", "banned-passwords", TENANT, "--add", "acmecorp")
        shown = json.loads(first.cli("tenant", "show", TENANT, "--json").stdout)
        assert shown["policy"]["lockout_threshold"] == 7
        assert shown["banned_terms"] == 1
        assert first.cli("mfa", "list", "--tenant", TENANT).returncode == 0
        token_id = json.loads(first.cli("token", "list", "--json").stdout)[0]["id"]
        assert first.cli("token", "delete", token_id).returncode == 0

        def listed() -> dict[str, Any]:
            return first.agents().get(agent.agent_id, {})

        wait_for(lambda: listed().get("connected"), what="the agent's stream in the store")
        broker_id = (first.data_dir / "broker.id").read_text().strip()
        assert listed()["brokers"] == [broker_id]
        # The agent's health, reported on its stream, kept in the store's connections.
        wait_for(lambda: "checks" in listed(), what="the agent's health in the store")
        assert [d["last_error"] for d in listed()["directories"]] == [""]  # One server, never down.

    def test_revoke_cuts_the_stream_within_a_second(
        self, first: BrokerProcess, tmp_path: Path
    ) -> None:
        """`agent revoke --store`: the broker cuts the agent's stream within a second."""
        agent_id = enrolled(first, TENANT, tmp_path / "revoked")
        stream = RawStream(first, agent_credentials(tmp_path / "revoked"))
        try:
            stream.hello(agent_id)
            wait_for(lambda: stream.welcomed, what="the stream to be welcomed")
            first.cli("agent", "revoke", agent_id)
            committed = time.monotonic()
            wait_for(lambda: stream.ended_at is not None, timeout=5, what="the stream to be cut")
            assert stream.ended_at is not None
            delay = stream.ended_at - committed
            print(f"\nshared store: revoked stream cut {delay:.3f} s after the CLI")  # noqa: T201
            assert delay <= REVOCATION_BOUND
            assert stream.error is not None
            assert "revoked" in str(stream.error.details())
        finally:
            stream.close()


def _serve(data_dir: Path, store_url: str) -> subprocess.CompletedProcess[str]:
    """Run `pta-broker serve --store` on free ports, expecting it to refuse."""
    free = ("--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0")
    return refused_serve(data_dir, "--store", store_url, *free)


class TestOneCaPerCluster:
    """The first broker's CA is the cluster's: another CA is refused, a copy of it joins."""

    def test_other_ca_refused_copied_ca_joins(
        self, first: BrokerProcess, run_dir: Path, store_url: str
    ) -> None:
        """A second data dir with a CA of its own: refused, told what to copy; copied: serves."""
        second_dir = run_dir / "broker-pg-2"
        refused = _serve(second_dir, store_url)
        assert refused.returncode == 1
        line = one_line(refused.stderr)
        assert "belongs to a cluster whose CA is" in line
        assert "Copy ca.pem and ca.key from the first broker's data dir" in line
        assert store_url not in line
        assert "pta:***@" in line
        for name in ("ca.pem", "ca.key"):
            shutil.copy(first.data_dir / name, second_dir / name)
        second = BrokerProcess.start(run_dir, "broker-pg-2", store=store_url)
        try:
            assert second.ca_file.read_bytes() == first.ca_file.read_bytes()
            assert second.cli("tenant", "list", "--json").returncode == 0
        finally:
            second.stop()


class TestStoreTrouble:
    """A store that cannot be used: the CLI and the broker say so in one line, no password."""

    def test_newer_schema_refused_by_cli_and_serve(self, postgres: Postgres, run_dir: Path) -> None:
        """Migrated by a newer pta-broker: a command and `serve` refuse, naming the versions."""
        url = _with_password(postgres.new_database("too_new"), secret("storepw"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version int, migrated_at float)")
            conn.execute("INSERT INTO schema_version VALUES (%s, 0)", (len(MIGRATIONS) + 1,))
        listed = subprocess.run(
            [str(BIN / "pta-broker"), "tenant", "list", "--store", url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert listed.returncode == 1
        assert "newer than this pta-broker knows" in one_line(listed.stderr)
        served = _serve(run_dir / "broker-too-new", url)
        assert served.returncode == 1
        line = one_line(served.stderr)
        assert "newer than this pta-broker knows" in line
        assert url not in line

    def test_server_gone(self, run_dir: Path, slapd: Slapd) -> None:
        """PostgreSQL stops under a serving broker: sign-ins are answered UNAVAILABLE at once.

        The tenant's lockout is off, so no decision needs the store: the broker refuses all
        the same, for it cannot learn of a revocation made through another broker. (Within
        the tick the server stopped in, a sign-in may still succeed.)
        """
        with Postgres() as server:
            url = _with_password(server.url, secret("storepw"))
            broker = BrokerProcess.start(run_dir, "broker-pg-gone", store=url)
            try:
                broker.add_tenant("gone", "gone.example")
                broker.cli("tenant", "policy", "gone", "--lockout-threshold", "0")
                agent = AgentProcess.start(broker, slapd, "gone", "agent-pg-gone")
                try:
                    alice = USERS["alice"]
                    assert broker.sign_in("alice@gone.example", alice).outcome == Outcome.SUCCESS
                    server.stop()
                    time.sleep(2 * TICK)
                    for _ in range(3):
                        began = time.monotonic()
                        with pytest.raises(grpc.RpcError) as refused:
                            broker.sign_in("alice@gone.example", alice)
                        assert time.monotonic() - began < FAST
                        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                        assert refused.value.details() == UNAVAILABLE
                    cli = broker.cli("tenant", "list", check=False)
                    assert cli.returncode == 1
                    assert "the store does not answer" in one_line(cli.stderr)
                    assert url not in cli.stderr
                finally:
                    agent.stop()
            finally:
                broker.stop()
            warned = broker.log_events("broker.store_unavailable")
            assert warned
            assert all(url not in str(event) for event in warned)

    def test_server_frozen(self, run_dir: Path, slapd: Slapd) -> None:
        """PostgreSQL frozen (SIGSTOP): UNAVAILABLE within a bound; thawed, sign-ins again.

        A frozen server accepts the request and never answers; only the broker's own cut
        (``CALL_TIMEOUT``) ends the first wait, and every call after it fails at once until
        the probe reaches the server again.
        """
        with Postgres() as server:
            url = server.url
            broker = BrokerProcess.start(run_dir, "broker-pg-frozen", store=url)
            try:
                broker.add_tenant("frozen", "frozen.example")
                agent = AgentProcess.start(broker, slapd, "frozen", "agent-pg-frozen")
                try:
                    alice = USERS["alice"]
                    assert broker.sign_in("alice@frozen.example", alice).outcome == Outcome.SUCCESS
                    server.pause()
                    try:
                        for _ in range(3):
                            began = time.monotonic()
                            with pytest.raises(grpc.RpcError) as refused:
                                broker.sign_in("alice@frozen.example", alice)
                            assert time.monotonic() - began < CALL_TIMEOUT + FAST
                            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                    finally:
                        server.resume()
                    wait_for(
                        lambda: _signs_in(broker, "alice@frozen.example", alice),
                        timeout=10,
                        what="a sign-in once PostgreSQL is thawed",
                    )
                finally:
                    agent.stop()
            finally:
                broker.stop()


def _signs_in(broker: BrokerProcess, upn: str, password: str) -> bool:
    """Whether a sign-in succeeds now (False for an UNAVAILABLE answer)."""
    try:
        return bool(broker.sign_in(upn, password).outcome == Outcome.SUCCESS)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return False
