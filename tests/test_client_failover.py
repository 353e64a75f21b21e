"""Clients fail over between brokers: calls spread, refusals resent, tried passwords never.

Two real brokers (one CA, one certificate name), each with its own agents checking passwords
in a real slapd; a client holds one channel to both with pta's service config
(``pta/failover.py``). What each broker saw is read from its audit log (``signin.completed``).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest

from broker.dispatch.jobs import LOST_AFTER_ACK
from pta.v1 import outcome_pb2
from tests.failover_pair import (
    ALICE,
    LONE_DOMAIN,
    LONE_TENANT,
    SAN,
    TENANT,
    Load,
    Pair,
    audited,
    sign_in,
)
from tests.support import ALICE_PASSWORD, BIN, BrokerProcess, unread_by, wait_for
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


SUCCESS = outcome_pb2.Outcome.SUCCESS
#: Sign-ins sent one after another on one channel.
CALLS = 40
#: Threads of a load, each with one sign-in in flight at a time.
THREADS = 4


@pytest.fixture(scope="module")
def pair(run_dir: Path, slapd: Slapd) -> Iterator[Pair]:
    """Two brokers with an agent of ``failover`` each; ``lone``'s only agent at ``b``."""
    brokers = Pair.start(run_dir, "failover", slapd)
    yield brokers
    brokers.stop()


class TestSpread:
    """One channel, two brokers: round robin, and refusals before dispatch resent."""

    def test_calls_spread_over_both_brokers(self, pair: Pair) -> None:
        """Sign-ins one after another go to each broker in turn."""
        with pair.channel() as channel:
            before = audited(pair.a, TENANT), audited(pair.b, TENANT)
            outcomes = {sign_in(channel).outcome for _ in range(CALLS)}
        assert outcomes == {SUCCESS}
        at_a, at_b = audited(pair.a, TENANT) - before[0], audited(pair.b, TENANT) - before[1]
        print(f"\n{CALLS} sign-ins on one channel: {at_a} at a, {at_b} at b")  # noqa: T201
        assert at_a + at_b == CALLS
        assert min(at_a, at_b) >= CALLS // 2 - 2

    def test_refused_before_dispatch_is_resent_to_the_other(self, pair: Pair) -> None:
        """``lone``'s agent is at ``b`` only: ``a`` refuses, the client resends to ``b``."""
        refused = audited(pair.a, LONE_TENANT, "UNAVAILABLE")
        answered = audited(pair.b, LONE_TENANT, "OK")
        with pair.channel() as channel:
            outcomes = {
                sign_in(channel, username=f"alice@{LONE_DOMAIN}").outcome for _ in range(CALLS)
            }
        assert outcomes == {SUCCESS}, "every sign-in answered, none failed"
        resent = audited(pair.a, LONE_TENANT, "UNAVAILABLE") - refused
        print(f"\n{CALLS} sign-ins: {resent} refused at a and resent to b")  # noqa: T201
        assert audited(pair.b, LONE_TENANT, "OK") - answered == CALLS
        assert audited(pair.a, LONE_TENANT, "OK") == 0
        assert resent >= CALLS // 4


class TestSigninCommand:
    """``pta-signin --broker a,b``, as a user runs it."""

    @staticmethod
    def run(*flags: str, username: str = ALICE) -> subprocess.CompletedProcess[str]:
        """Run ``pta-signin`` with ``flags``, alice's password on standard input."""
        return subprocess.run(
            [str(BIN / "pta-signin"), "--password-stdin", *flags, username],
            input=ALICE_PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def test_both_brokers_by_one_name(self, pair: Pair) -> None:
        """Two hosts (127.0.0.1, localhost), one name both certificates carry (``--san``)."""
        port_a, port_b = (broker.public.rpartition(":")[2] for broker in (pair.a, pair.b))
        brokers = f"127.0.0.1:{port_a},localhost:{port_b}"
        ca = ("--ca-file", str(pair.a.ca_file))
        before = audited(pair.a, TENANT) + audited(pair.b, TENANT)
        runs = [self.run("--broker", brokers, "--server-name", SAN, *ca) for _ in range(4)]
        assert [(r.returncode, r.stdout) for r in runs] == [(0, "SUCCESS: signed in\n")] * 4
        assert audited(pair.a, TENANT) + audited(pair.b, TENANT) == before + 4
        unnamed = self.run("--broker", brokers, *ca)
        assert unnamed.returncode == 2
        assert "--server-name" in unnamed.stderr
        wrong = self.run("--broker", brokers, "--server-name", "other.pta.test", *ca)
        assert wrong.returncode == 20, "no certificate carries that name: no connection"

    def test_resent_to_the_broker_with_an_agent(self, pair: Pair) -> None:
        """``lone``'s agent is at ``b`` only: every run signs in, wherever it starts."""
        refused = audited(pair.a, LONE_TENANT, "UNAVAILABLE")
        answered = audited(pair.b, LONE_TENANT, "OK")
        flags = ("--broker", f"{pair.a.public},{pair.b.public}", "--ca-file", str(pair.a.ca_file))
        runs = [self.run(*flags, username=f"alice@{LONE_DOMAIN}") for _ in range(6)]
        assert [r.returncode for r in runs] == [0] * 6, [r.stderr for r in runs]
        assert audited(pair.b, LONE_TENANT, "OK") == answered + 6
        resent = audited(pair.a, LONE_TENANT, "UNAVAILABLE") - refused
        print(f"\n6 pta-signin runs: {resent} refused at a and resent to b")  # noqa: T201


class TestBrokerGone:
    """A broker that stops, or dies, under load: the other one goes on."""

    @pytest.fixture
    def doomed(self, run_dir: Path, slapd: Slapd, request: pytest.FixtureRequest) -> Iterator[Pair]:
        """A pair of its own: the test stops ``a``."""
        name = "failover-" + request.node.name.removeprefix("test_")[:20]
        brokers = Pair.start(run_dir, name, slapd)
        yield brokers
        brokers.stop()

    def test_sigterm_under_load(self, doomed: Pair) -> None:
        """A draining broker answers what it has; new sign-ins go to the other: none fails."""
        load = Load(doomed, 4.0)
        runner = threading.Thread(target=load.run, args=(THREADS,))
        runner.start()
        time.sleep(1.0)
        doomed.a.process.send_signal(signal.SIGTERM)
        assert doomed.a.process.wait(15) == 0
        at_b = audited(doomed.b, TENANT)
        runner.join()
        after = audited(doomed.b, TENANT) - at_b
        print(f"\nSIGTERM under load: {dict(load.statuses)}; b answered {after} after")  # noqa: T201
        assert load.failures == []
        assert after > 0

    def test_sigkill_under_load(self, doomed: Pair) -> None:
        """Only sign-ins the dead broker held fail (UNAVAILABLE); the rest go on at the other."""
        load = Load(doomed, 4.0)
        runner = threading.Thread(target=load.run, args=(THREADS,))
        runner.start()
        time.sleep(1.0)
        doomed.a.process.kill()
        doomed.a.process.wait(5)
        at_b = audited(doomed.b, TENANT)
        runner.join()
        after = audited(doomed.b, TENANT) - at_b
        print(f"\nSIGKILL under load: {dict(load.statuses)}; b answered {after} after")  # noqa: T201
        assert all(f.startswith("UNAVAILABLE") for f in load.failures), load.failures
        assert len(load.failures) <= THREADS
        assert after > 0


@pytest.fixture(scope="module")
def held_directory() -> Iterator[Slapd]:
    """A slapd of its own for ``a``'s agent: these tests stop it to hold a sign-in there."""
    with Slapd(users=[DirectoryUser(uid="alice", password=ALICE_PASSWORD)]) as server:
        yield server


@dataclass
class Held:
    """A pair whose ``a`` checks passwords in a directory the test can stop."""

    pair: Pair
    directory: Slapd
    #: The status of the last sign-in that got one.
    error: grpc.RpcError | None = None

    def attempt_direct(self, broker: BrokerProcess) -> str:
        """Sign in once through a channel to ``broker`` alone."""
        with broker.channel() as channel:
            return self.attempt(channel)

    def attempt(self, channel: grpc.Channel) -> str:
        """Sign in once on ``channel``: the outcome's or the status's name."""
        try:
            return str(outcome_pb2.Outcome.Name(sign_in(channel).outcome))
        except grpc.RpcError as error:
            self.error = error
            return str(error.code().name)

    def hold_at_a(
        self, channel: grpc.Channel, pool: concurrent.futures.Executor
    ) -> concurrent.futures.Future[str]:
        """Sign in until a sign-in waits at ``a``'s agent, its bind at the stopped directory.

        Those the channel sends to ``b`` are answered at once; the first sent to ``a`` stays.
        """
        assert self.directory.pid is not None
        os.kill(self.directory.pid, signal.SIGSTOP)
        agent = self.pair.agents[0].agent_id
        for _ in range(4):
            pending = pool.submit(self.attempt, channel)
            wait_for(
                lambda pending=pending: (
                    pending.done() or self.pair.a.agents()[agent]["in_flight"] == 1
                ),
                what="a sign-in answered, or held at a",
            )
            if not pending.done():
                wait_for(lambda: unread_by(self.directory.port) > 0, what="a bind at slapd")
                return pending
            assert pending.result() == "SUCCESS"
        raise AssertionError("no sign-in went to a")

    def thaw(self) -> None:
        """Let the directory run again."""
        assert self.directory.pid is not None
        os.kill(self.directory.pid, signal.SIGCONT)


class TestNotResent:
    """A sign-in an agent may have tried is never sent to another broker by the client."""

    @pytest.fixture
    def held(
        self,
        run_dir: Path,
        slapd: Slapd,
        held_directory: Slapd,
        request: pytest.FixtureRequest,
    ) -> Iterator[Held]:
        """A pair of its own (grace and sign-in timeout 30 s), ``a`` on ``held_directory``."""
        name = "held-" + request.node.name.removeprefix("test_")[:20]
        stopping = ("--grace", "30", "--signin-timeout", "30s")
        brokers = Pair.start(run_dir, name, slapd, *stopping, slapd_a=held_directory)
        held = Held(brokers, held_directory)
        try:
            with brokers.a.channel() as warm:  # a's agent knows alice's DN; LDAP is warm.
                assert held.attempt(warm) == "SUCCESS"
            yield held
        finally:
            held.thaw()
            brokers.stop()

    def test_agent_lost_after_taking_it(self, held: Held) -> None:
        """Its agent dies at the directory: ``a`` answers UNAVAILABLE, not to be resent.

        The answer carries ``grpc-retry-pushback-ms: -1``; ``b`` never sees the sign-in.
        """
        pair = held.pair
        with pair.channel() as channel, concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = held.hold_at_a(channel, pool)
            at_a, at_b = audited(pair.a, TENANT), audited(pair.b, TENANT)
            pair.agents[0].process.kill()
            assert pending.result(timeout=30) == "UNAVAILABLE"
        error = held.error
        assert error is not None
        assert error.details() == LOST_AFTER_ACK
        trailers = error.trailing_metadata() or ()
        pushback = [int(m.value) for m in trailers if m.key == "grpc-retry-pushback-ms"]
        assert pushback == [-1], "a negative pushback: gRPC's retry policy stops"
        assert audited(pair.a, TENANT, "UNAVAILABLE") >= 1
        assert audited(pair.a, TENANT) == at_a + 1, "a answered it, once"
        assert audited(pair.b, TENANT) == at_b, "b never saw it"

    def test_broker_killed_while_its_agent_holds_it(self, held: Held) -> None:
        """``a`` dies with the sign-in at its agent: the call fails, ``b`` never sees it.

        ``a`` sent the response headers before the password left for the agent: gRPC
        commits a call on them and resends nothing after, even when the connection dies.
        """
        pair = held.pair
        with pair.channel() as channel, concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = held.hold_at_a(channel, pool)
            at_b = audited(pair.b, TENANT)
            pair.a.process.kill()
            assert pending.result(timeout=30) == "UNAVAILABLE"
            assert audited(pair.b, TENANT) == at_b, "b never saw it"
            assert held.attempt(channel) == "SUCCESS", "the next one goes to b"
        assert audited(pair.b, TENANT) == at_b + 1

    def test_draining_broker_sends_new_sign_ins_to_the_other(self, held: Held) -> None:
        """``a`` drains a held sign-in; meanwhile new ones go to ``b``, and ``a`` refuses them.

        What a draining broker refuses is resent: none of these fails. The held one is
        answered once the directory is back, and ``a`` then exits 0.
        """
        pair = held.pair
        with pair.channel() as channel, concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = held.hold_at_a(channel, pool)
            pair.a.process.send_signal(signal.SIGTERM)
            wait_for(lambda: pair.a.log_events("broker.stopping"), what="a to begin stopping")
            at_a, at_b = audited(pair.a, TENANT), audited(pair.b, TENANT)
            during = [held.attempt(channel) for _ in range(10)]
            direct = held.attempt_direct(pair.a)
            assert pair.a.process.poll() is None, "a still drains the held sign-in"
            held.thaw()
            assert pending.result(timeout=30) == "SUCCESS"
        assert pair.a.process.wait(15) == 0
        print(f"\nwhile a drained: {during}; straight to a: {direct}")  # noqa: T201
        assert during == ["SUCCESS"] * 10
        assert direct == "UNAVAILABLE"
        assert audited(pair.b, TENANT) == at_b + 10
        assert audited(pair.a, TENANT) == at_a + 1, "a answered only the held one"
