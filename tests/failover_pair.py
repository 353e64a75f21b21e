"""Two brokers a client reaches through one channel, for the failover tests.

Each broker is a real ``pta-broker serve`` with its own data directory and its own agents (the
store they will share comes later); the second starts with the first's CA copied into its data
directory, so one ``ca.pem`` verifies both, and both carry the one name :data:`SAN`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from pta import failover
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tests import secrets_registry
from tests.support import ALICE_PASSWORD, AgentProcess, BrokerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.slapd import Slapd

#: The one name every broker's certificate carries (``--san``), as behind one DNS name.
SAN = "brokers.pta.test"
TENANT, DOMAIN = "failover", "failover.example"
#: A tenant whose only agent is attached to the second broker.
LONE_TENANT, LONE_DOMAIN = "lone", "lone.example"
ALICE = f"alice@{DOMAIN}"


def start_pair(
    run_dir: Path, name: str, *extra: str, listen: tuple[str, str] = ("127.0.0.1:0",) * 2
) -> tuple[BrokerProcess, BrokerProcess]:
    """Start brokers ``{name}-a`` and ``{name}-b`` sharing a CA, each with both tenants.

    ``listen``: each one's public endpoint (by default, any free port of 127.0.0.1); its
    agent endpoint is on a free port of the same address.
    """

    def endpoints(public: str) -> tuple[str, ...]:
        return ("--listen", public, "--agent-listen", f"{public.rpartition(':')[0]}:0")

    started: list[BrokerProcess] = []
    try:
        first = BrokerProcess.start(
            run_dir, f"{name}-a", "--san", SAN, *endpoints(listen[0]), *extra
        )
        started.append(first)
        second_dir = run_dir / f"{name}-b"
        second_dir.mkdir(mode=0o700)
        for file in ("ca.pem", "ca.key"):  # A broker whose data dir holds a CA uses it.
            shutil.copy2(first.data_dir / file, second_dir / file)
        second = BrokerProcess.start(
            run_dir, f"{name}-b", "--san", SAN, *endpoints(listen[1]), *extra
        )
        started.append(second)
        assert second.ca_file.read_bytes() == first.ca_file.read_bytes()
        for broker in started:
            broker.add_tenant(TENANT, DOMAIN)
            broker.add_tenant(LONE_TENANT, LONE_DOMAIN)
    except BaseException:
        for broker in started:
            broker.stop()
        raise
    return first, second


@dataclass
class Pair:
    """Brokers ``a`` and ``b``, the agents attached to them, and channels to both at once."""

    a: BrokerProcess
    b: BrokerProcess
    agents: list[AgentProcess] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        run_dir: Path,
        name: str,
        slapd: Slapd,
        *extra: str,
        slapd_a: Slapd | None = None,
        listen: tuple[str, str] = ("127.0.0.1:0",) * 2,
    ) -> Pair:
        """Both brokers, an agent of :data:`TENANT` at each; :data:`LONE_TENANT`'s at ``b``.

        With ``slapd_a``, ``a``'s agent checks passwords there instead, waiting up to a minute
        for an answer (a test can stop that directory to hold a sign-in at the agent).
        """
        a, b = start_pair(run_dir, name, *extra, listen=listen)
        pair = cls(a, b)
        own: tuple[str, ...] = ()
        if slapd_a is not None:
            config = run_dir / f"agent-{name}-a.toml"
            config.write_text(
                f'[[directory]]\nurls = ["{slapd_a.url}"]\nbase_dn = "{slapd_a.base_dn}"\n'
                "receive_timeout = 60\n"
            )
            own = ("--config", str(config))
        try:
            pair.agents.append(
                AgentProcess.start(a, None if own else slapd, TENANT, f"agent-{name}-a", *own)
            )
            pair.agents.append(AgentProcess.start(b, slapd, TENANT, f"agent-{name}-b"))
            pair.agents.append(AgentProcess.start(b, slapd, LONE_TENANT, f"agent-{name}-lone"))
        except BaseException:
            pair.stop()
            raise
        return pair

    def stop(self) -> None:
        """Stop every agent and both brokers."""
        for agent in self.agents:
            agent.stop()
        self.a.stop()
        self.b.stop()

    @property
    def brokers(self) -> failover.Brokers:
        """The target of both public endpoints (both on 127.0.0.1: checked as that name)."""
        return failover.brokers(f"{self.a.public},{self.b.public}")

    @contextlib.contextmanager
    def channel(self, brokers: failover.Brokers | None = None) -> Iterator[grpc.Channel]:
        """One channel to both brokers, with pta's service config (round robin, retries).

        Both are connected before it is handed over: round robin picks only those that are.
        """
        brokers = brokers or self.brokers
        creds = grpc.ssl_channel_credentials(self.a.ca_file.read_bytes())
        with grpc.secure_channel(brokers.target, creds, options=brokers.options()) as channel:
            before = audited(self.a, TENANT), audited(self.b, TENANT)
            for _ in range(20):
                sign_in(channel)
                if audited(self.a, TENANT) > before[0] and audited(self.b, TENANT) > before[1]:
                    break
            else:
                raise AssertionError("the channel never reached both brokers")
            yield channel


def audited(broker: BrokerProcess, tenant: str, status: str | None = None) -> int:
    """How many sign-ins of ``tenant`` the broker audited (with ``status``: only those)."""
    return sum(
        1
        for event in broker.log_events("signin.completed")
        if event.get("tenant") == tenant and (status is None or event.get("status") == status)
    )


def sign_in(
    channel: grpc.Channel, username: str = ALICE, password: str = ALICE_PASSWORD
) -> signin_pb2.SignInResponse:
    """One SignIn on ``channel`` (raises ``grpc.RpcError`` on a status)."""
    secrets_registry.require(password)
    response: signin_pb2.SignInResponse = signin_pb2_grpc.SignInServiceStub(channel).SignIn(
        signin_pb2.SignInRequest(username=username, password=password), timeout=20
    )
    return response


class Load:
    """Alice's right password from several threads on one channel to both brokers."""

    def __init__(self, pair: Pair, seconds: float) -> None:
        """Prepare a load that ends after ``seconds``."""
        self.pair = pair
        self.until = time.monotonic() + seconds
        self.statuses: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def run(self, threads: int) -> None:
        """Sign in from ``threads`` threads until the end; every answer is recorded."""
        with self.pair.channel() as channel, concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(self._loop, channel) for _ in range(threads)]:
                future.result()

    def _loop(self, channel: grpc.Channel) -> None:
        while time.monotonic() < self.until:
            try:
                status = outcome_pb2.Outcome.Name(sign_in(channel).outcome)
                failure = "" if status == "SUCCESS" else status
            except grpc.RpcError as error:
                status = error.code().name
                failure = f"{status}: {error.details()}"
            with self._lock:
                self.statuses[status] += 1
                if failure:
                    self.failures.append(failure)
