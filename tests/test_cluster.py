"""A cluster: one PostgreSQL, three brokers, two agents attached to every broker; real everything.

What the scale-out promises, each proved against real processes: a sign-in through any broker;
guesses spread over the brokers lock at the single-broker threshold (and the directory sees no
more); an MFA challenge begun at one broker completed at another; a revocation cuts the
agent's streams at every broker within a second; a broker SIGKILLed every few seconds under
load, with every sign-in answered and none answered wrong.
"""

from __future__ import annotations

import base64
import concurrent.futures
import itertools
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING

import grpc
import ldap3
import pytest

from broker.policy.mfa import code_at
from broker.store import open_store
from pta.failover import brokers as failover_target
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tests.cluster import at, connected_at, join, start_cluster
from tests.secrets_registry import known, secret
from tests.support import AgentProcess, BrokerProcess, wait_for
from tooling.postgres import Postgres, postgres_missing_reason
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REASON = postgres_missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
Outcome = outcome_pb2.Outcome
TENANT, DOMAIN = "cluster", "cluster.example"
#: The broker's threshold, below the directory's (slapd's pwdMaxFailure 5).
THRESHOLD = 3
OFFICE, OFFICE_IP, ELSEWHERE_IP = "10.0.0.0/8", "10.1.2.3", "203.0.113.9"
#: The chaos run: threads of sign-ins, for this long, a broker killed every KILL_EVERY seconds.
CHAOS_THREADS, CHAOS_SECONDS, KILL_EVERY = 4, 12.0, 3.0
USERS = {
    "alice": secret("Cluster-alice-1!"),
    "guessed": secret("Cluster-guessed-2!"),
    "mfa-user": secret("Cluster-mfa-3!"),
    # The chaos load's users, one a thread: a user's checks in flight at a broker that is
    # killed count as in flight until they expire (their deadline + 10 s), and a user with
    # THRESHOLD checks in flight waits for them; one sign-in at a time never does.
    **{f"loader-{n}": secret(f"Cluster-loader-{n}!") for n in range(CHAOS_THREADS)},
}
NAMES = ["cl-1", "cl-2", "cl-3"]
#: What the docs promise: a revocation reaches every live stream within a second.
REVOCATION_BOUND = 1.0
#: The chaos load's one wrong password.
WRONG = secret("cl-load-wrong")


class Cluster:
    """The brokers, the agents, the directory and the MFA key file."""

    def __init__(self, brokers: list[BrokerProcess], slapd: Slapd, key_file: Path) -> None:
        """Hold the running parts."""
        self.brokers = brokers
        self.slapd = slapd
        self.key_file = key_file
        self.agents: list[AgentProcess] = []

    def serve_flags(self) -> tuple[str, ...]:
        """How every broker of the cluster is started."""
        return ("--mfa-key-file", str(self.key_file), "--trusted-proxy", "127.0.0.1/32")

    def failures_in_directory(self, uid: str) -> int:
        """How many wrong passwords slapd itself has counted for ``uid`` (ppolicy)."""
        server = ldap3.Server(self.slapd.url, get_info=ldap3.NONE)
        with ldap3.Connection(
            server, self.slapd.admin_dn, self.slapd.admin_password, auto_bind=True
        ) as conn:
            conn.search(
                self.slapd.user_dn(uid),
                "(objectClass=*)",
                ldap3.BASE,
                attributes=["pwdFailureTime"],
            )
            return len(conn.entries[0].entry_attributes_as_dict.get("pwdFailureTime", []))

    def attached_everywhere(self, agent: AgentProcess) -> bool:
        """Whether every running broker has welcomed a stream of ``agent``."""
        return all(connected_at(b, agent) for b in self.brokers if b.process.poll() is None)


@pytest.fixture(scope="module")
def cluster(
    postgres: Postgres, run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three brokers on one database, two agents enrolled at the first, attached to all."""
    key_file = tmp_path_factory.mktemp("cluster-keys") / "mfa.key"
    made = BrokerProcess.cli_without_data("mfa", "keygen", str(key_file))
    assert made.returncode == 0, made.stderr
    users = [DirectoryUser(uid=uid, password=pw) for uid, pw in USERS.items()]
    url = postgres.new_database("cluster")
    with Slapd(users=users) as slapd:
        flags = ("--mfa-key-file", str(key_file), "--trusted-proxy", "127.0.0.1/32")
        brokers = start_cluster(run_dir, NAMES, url, *flags)
        found = Cluster(brokers, slapd, key_file)
        try:
            first = brokers[0]
            first.add_tenant(TENANT, DOMAIN)
            first.cli(
                "tenant", "policy", TENANT, "--lockout-threshold", str(THRESHOLD),
                "--familiar-network", OFFICE, "--mfa", "unfamiliar",
            )  # fmt: skip
            for n in range(2):
                found.agents.append(AgentProcess.start(first, slapd, TENANT, f"cl-agent-{n}"))
            for agent in found.agents:
                wait_for(lambda a=agent: found.attached_everywhere(a), what="agents everywhere")
            yield found
        finally:
            for agent in found.agents:
                agent.stop()
            for broker in found.brokers:
                broker.stop()


def outcome_via(broker: BrokerProcess, uid: str, password: str, ip: str = OFFICE_IP) -> int:
    """One sign-in through ``broker`` from ``ip``: its outcome."""
    return broker.sign_in(f"{uid}@{DOMAIN}", password, client_ip=ip).outcome


class TestEveryBroker:
    """Any broker answers any sign-in: every agent is attached to every broker."""

    def test_sign_ins_through_each_broker(self, cluster: Cluster) -> None:
        """The right password succeeds and a wrong one is refused, at each of the three."""
        for broker in cluster.brokers:
            assert outcome_via(broker, "alice", USERS["alice"]) == Outcome.SUCCESS
            refused = outcome_via(broker, "alice", secret(f"cl-wrong-{broker.data_dir.name}"))
            assert refused == Outcome.INVALID_CREDENTIALS

    def test_each_agent_holds_a_stream_to_each_broker(self, cluster: Cluster) -> None:
        """Streams = agents x brokers, as the operator's listing shows them."""

        def everywhere() -> bool:  # Each broker reports its streams every second.
            rows = cluster.brokers[0].agents()
            return all(
                len(rows[a.agent_id]["brokers"]) == len(cluster.brokers) for a in cluster.agents
            )

        wait_for(everywhere, what="every broker to report every agent's stream")
        rows = cluster.brokers[0].agents()
        for agent in cluster.agents:
            assert rows[agent.agent_id]["streams"] == len(cluster.brokers)


class TestLockoutIsTheClusters:
    """Guesses spread over the brokers get what one broker allows."""

    def test_spread_guesses_lock_at_the_threshold(self, cluster: Cluster) -> None:
        """Nine guesses round the brokers: the first THRESHOLD reach slapd, then locked."""
        outcomes = [
            outcome_via(broker, "guessed", secret(f"cl-guess-{n}"), ip=ELSEWHERE_IP)
            for n, broker in zip(range(3 * THRESHOLD), itertools.cycle(cluster.brokers))
        ]
        assert outcomes[:THRESHOLD] == [Outcome.INVALID_CREDENTIALS] * THRESHOLD
        assert outcomes[THRESHOLD:] == [Outcome.LOCKED_BY_POLICY] * (2 * THRESHOLD)
        assert cluster.failures_in_directory("guessed") == THRESHOLD
        for broker in cluster.brokers:  # The right password too, from anywhere but the office.
            locked = outcome_via(broker, "guessed", USERS["guessed"], ip=ELSEWHERE_IP)
            assert locked == Outcome.LOCKED_BY_POLICY


class TestSecondFactorAcrossBrokers:
    """A challenge begun at one broker is completed at another."""

    def test_completed_elsewhere(self, cluster: Cluster) -> None:
        """The password at cl-1 from elsewhere (MFA wanted), the code at cl-3: a token."""
        enrolled = cluster.brokers[0].cli(
            "mfa", "enroll", "--tenant", TENANT, f"mfa-user@{DOMAIN}",
            "--mfa-key-file", str(cluster.key_file),
        )  # fmt: skip
        uri = enrolled.stdout.strip()
        first, last = cluster.brokers[0], cluster.brokers[-1]
        began = first.sign_in(f"mfa-user@{DOMAIN}", USERS["mfa-user"], client_ip=ELSEWHERE_IP)
        assert began.outcome == Outcome.MFA_REQUIRED
        with last.channel() as channel:
            done = signin_pb2_grpc.SignInServiceStub(channel).CompleteMfa(
                signin_pb2.CompleteMfaRequest(challenge_id=began.mfa_challenge_id, code=_code(uri)),
                timeout=15,
            )
        assert done.outcome == Outcome.SUCCESS
        assert done.token


class TestRevocation:
    """A revoked agent is cut everywhere at once."""

    def test_revoke_cuts_every_broker_within_a_second(self, cluster: Cluster) -> None:
        """A third agent attached to all three; revoked through the CLI: cut at each."""
        doomed = AgentProcess.start(cluster.brokers[0], cluster.slapd, TENANT, "cl-doomed")
        try:
            wait_for(lambda: cluster.attached_everywhere(doomed), what="doomed everywhere")
            revoked = cluster.brokers[1].cli("agent", "revoke", doomed.agent_id)
            assert revoked.returncode == 0
            done = _revoked_at(cluster.brokers[1], doomed.agent_id)  # Its commit, in the store.
            delays = []
            for broker in cluster.brokers:
                wait_for(lambda b=broker: _cut(b, doomed.agent_id), timeout=5, what="the cut")
                delays.append(min(at(e) for e in _cut(broker, doomed.agent_id)) - done)
            shown = [round(d, 3) for d in delays]
            print(f"\nrevocation: streams cut {shown} s after the commit")  # noqa: T201
            assert max(delays) < REVOCATION_BOUND
        finally:
            doomed.stop()


class TestBrokersDie:
    """Brokers killed under load: every sign-in answered, none wrong."""

    def test_sigkill_every_few_seconds(self, cluster: Cluster, run_dir: Path) -> None:
        """Load over one channel to all three; a broker killed and restarted every 3 s.

        Each answer is right, or UNAVAILABLE for a sign-in a dead broker held.
        """
        target = failover_target(",".join(b.public for b in cluster.brokers))
        credentials = grpc.ssl_channel_credentials(cluster.brokers[0].ca_file.read_bytes())
        stop = threading.Event()
        tally: dict[str, int] = {}
        lock = threading.Lock()
        wrong: list[str] = []

        def load(n: int) -> None:
            with grpc.secure_channel(target.target, credentials, options=target.options()) as ch:
                stub = signin_pb2_grpc.SignInServiceStub(ch)
                for i in itertools.count():
                    if stop.is_set():
                        return
                    right = i % 5 != 0
                    # Wrong: one password for a name the directory lacks, one name a thread (a
                    # repeat is not counted again, at any broker, once its first is answered):
                    # nobody is locked, every answer is known.
                    wrong_one = (f"nobody-{n}", WRONG)
                    loader = f"loader-{n}"
                    uid, password = (loader, USERS[loader]) if right else wrong_one
                    request = signin_pb2.SignInRequest(
                        username=f"{uid}@{DOMAIN}", password=password, client_ip=OFFICE_IP
                    )
                    try:
                        got = Outcome.Name(stub.SignIn(request, timeout=10).outcome)
                    except grpc.RpcError as error:
                        got = error.code().name
                    expected = "SUCCESS" if right else "INVALID_CREDENTIALS"
                    with lock:
                        tally[got] = tally.get(got, 0) + 1
                        if got not in (expected, "UNAVAILABLE"):
                            wrong.append(f"{expected} answered {got}")

        kills = 0
        with concurrent.futures.ThreadPoolExecutor(CHAOS_THREADS) as pool:
            running = [pool.submit(load, n) for n in range(CHAOS_THREADS)]
            began = time.monotonic()
            for victim in itertools.cycle(range(1, len(cluster.brokers))):
                # Every KILL_EVERY seconds from the start, however long a restart took.
                time.sleep(max(0.0, began + (kills + 1) * KILL_EVERY - time.monotonic()))
                if time.monotonic() - began >= CHAOS_SECONDS:
                    break
                old = cluster.brokers[victim]
                old.process.kill()
                old.process.wait()
                kills += 1
                cluster.brokers[victim] = join(
                    run_dir, old.data_dir.name, cluster.brokers[0], *cluster.serve_flags()
                )
            stop.set()
            for future in running:
                future.result(timeout=30)
        print(f"\nchaos: {kills} kills, answers {tally}")  # noqa: T201
        assert not wrong
        assert kills >= 3
        answered = sum(tally.values())
        assert tally.get("SUCCESS", 0) > answered / 2
        # Only what a dead broker held fails: at most the calls in flight at each kill.
        assert tally.get("UNAVAILABLE", 0) <= kills * CHAOS_THREADS
        for agent in cluster.agents:  # The agents re-attach to every broker restarted.
            wait_for(lambda a=agent: cluster.attached_everywhere(a), what="agents back")


def _revoked_at(broker: BrokerProcess, agent_id: str) -> float:
    """When the store recorded the agent's revocation (Unix time)."""
    store = open_store(broker.data_dir, url=broker.store)
    try:
        revoked = next(
            a.revoked_at for a in store.agents.list(fresh_within=0) if a.agent_id == agent_id
        )
    finally:
        store.close()
    assert revoked is not None
    return revoked


def _cut(broker: BrokerProcess, agent_id: str) -> list[dict[str, object]]:
    """The broker's log events that say it cut one of the agent's streams."""
    return [e for e in broker.log_events("agent.cut") if e.get("agent_id") == agent_id]


def _code(uri: str) -> str:
    """The code the authenticator enrolled with ``uri`` shows now (registered as a secret)."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    raw = known(query["secret"][0])
    return known(code_at(base64.b32decode(raw + "=" * (-len(raw) % 8)), time.time()))
