"""Real processes for the integration tests: a broker, its CLI, agents, the client.

Each program runs as the user would run it (its console script, its own process, real TLS on
127.0.0.1), with its log in the run directory so a test can read it and the secret scan can
search it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from broker.store import open_store
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tests import secrets_registry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from broker.store.records import DirectoryPolicyRecord
    from tooling.slapd import Slapd

BIN = Path(sys.executable).parent
#: The checkout: where `python -m tooling.…` finds the tooling package (never installed).
ROOT = Path(__file__).resolve().parent.parent
#: The sample user every load signs in as (see tests/conftest.py USERS).
ALICE_PASSWORD = secrets_registry.secret("Alice-pw-1!")
START_TIMEOUT = 15.0


def wait_for(predicate: object, timeout: float = START_TIMEOUT, what: str = "condition") -> None:
    """Poll ``predicate`` (a callable) until true, or fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class BrokerProcess:
    """A ``pta-broker serve`` process and the CLI against its store.

    The store is the SQLite file in its data directory, or with ``store`` the PostgreSQL
    database (a URL) the broker serves with ``--store``, which the CLI then names too.
    """

    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    public: str = ""
    agent: str = ""
    ca_file: Path = field(default_factory=Path)
    store: str = field(default="", repr=False)
    #: ``host:port`` of its ``/metrics`` when started with ``--metrics-listen``.
    metrics: str = ""

    @classmethod
    def start(cls, run_dir: Path, name: str, *extra: str, store: str = "") -> BrokerProcess:
        """Start a broker on free loopback ports and wait until it serves.

        Args:
            run_dir: Where its data dir (``name``) and log (``name.log``) go.
            name: The broker's name in the run.
            extra: More ``serve`` flags.
            store: A PostgreSQL URL to serve with (``--store``); SQLite when empty.
        """
        data_dir = run_dir / name
        log_path = run_dir / f"{name}.log"
        endpoints = data_dir / "endpoints.json"
        endpoints.unlink(missing_ok=True)
        process = subprocess.Popen(
            [
                str(BIN / "pta-broker"),
                "--log-level=debug",
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
                *(("--store", store) if store else ()),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_path.open("ab"),
        )
        broker = cls(data_dir=data_dir, log_path=log_path, process=process, store=store)
        wait_for(lambda: endpoints.exists() or process.poll() is not None, what="broker to serve")
        assert process.poll() is None, log_path.read_text()[-3000:]
        info = json.loads(endpoints.read_text())
        broker.public, broker.agent = info["public"], info["agent"]
        broker.ca_file = Path(info["ca_file"])
        broker.metrics = info.get("metrics", "")
        return broker

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a ``pta-broker`` management command against this broker's store."""
        where = ("--store", self.store) if self.store else ("--data-dir", str(self.data_dir))
        return subprocess.run(
            [str(BIN / "pta-broker"), *args, *where],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    @staticmethod
    def cli_without_data(*args: str) -> subprocess.CompletedProcess[str]:
        """Run a ``pta-broker`` command that needs no data directory (``mfa keygen``)."""
        return subprocess.run(
            [str(BIN / "pta-broker"), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    def add_tenant(self, name: str, *domains: str) -> None:
        """Create a tenant owning ``domains``."""
        self.cli("tenant", "add", name, *(arg for d in domains for arg in ("--domain", d)))

    def token(self, tenant: str, ttl: str = "1h") -> str:
        """Create a one-time enrolment token, its secret registered for the final scan."""
        token = self.cli("token", "create", "--tenant", tenant, "--ttl", ttl).stdout.strip()
        return secrets_registry.enrolment_token(token, self.data_dir)

    def log_events(self, event: str) -> list[dict[str, object]]:
        """Return the broker's JSON log lines for one event."""
        lines = self.log_path.read_text().splitlines()
        return [e for line in lines if event in line and (e := _json(line)) and e["event"] == event]

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        _stop(self.process)

    def agents(self) -> dict[str, dict[str, Any]]:
        """The operator's view of every agent (``agents list --json``), by agent id."""
        listing = json.loads(self.cli("agents", "list", "--json").stdout)
        return {str(row["id"]): row for row in listing}

    def wait_in_flight(self, agent_id: str, count: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until the broker says ``count`` sign-ins are at the agent, sent and unanswered.

        The serving broker writes its streams' state to the store every second; the CLI reads
        it there, as an operator would.
        """
        wait_for(
            lambda: self.agents().get(agent_id, {}).get("in_flight") == count,
            timeout=timeout,
            what=f"{count} sign-ins in flight at {agent_id}",
        )

    def directory_policies(self, tenant: str, agent_id: str) -> dict[str, DirectoryPolicyRecord]:
        """An agent's last directory report as the broker stored it, by domain."""
        # Read beside the serving broker, as the CLI does.
        store = open_store(self.data_dir, url=self.store)
        try:
            return {r.domain: r for r in store.directory_policies(tenant) if r.agent_id == agent_id}
        finally:
            store.close()

    def wait_for_policies(
        self, tenant: str, agent_id: str, domains: set[str]
    ) -> dict[str, DirectoryPolicyRecord]:
        """Wait until the agent's stored report covers exactly ``domains``; return it."""
        wait_for(
            lambda: set(self.directory_policies(tenant, agent_id)) == domains,
            what=f"{agent_id}'s directory report",
        )
        return self.directory_policies(tenant, agent_id)

    @contextlib.contextmanager
    def channel(self) -> Iterator[grpc.Channel]:
        """A client channel to the public endpoint, trusting the broker's CA."""
        creds = grpc.ssl_channel_credentials(self.ca_file.read_bytes())
        with grpc.secure_channel(self.public, creds) as channel:
            yield channel

    def sign_in(
        self, username: str, password: str, timeout: float = 15.0, client_ip: str = ""
    ) -> signin_pb2.SignInResponse:
        """Sign in once through a fresh channel (raises ``grpc.RpcError`` on a status).

        The password must come from ``tests.secrets_registry``: the final scan looks for it.
        """
        secrets_registry.require(password)
        with self.channel() as channel:
            stub = signin_pb2_grpc.SignInServiceStub(channel)
            request = signin_pb2.SignInRequest(
                username=username, password=password, client_ip=client_ip
            )
            response: signin_pb2.SignInResponse = stub.SignIn(request, timeout=timeout)
            return response

    def outcome(self, username: str, password: str) -> str:
        """One sign-in's outcome name, or its status's name (``UNAVAILABLE``)."""
        try:
            reply = self.sign_in(username, password)
        except grpc.RpcError as error:
            return str(error.code().name)
        return str(outcome_pb2.Outcome.Name(reply.outcome))


def refused_serve(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run `pta-broker serve --data-dir`, expecting it to refuse and exit by itself."""
    return subprocess.run(
        [str(BIN / "pta-broker"), "serve", "--data-dir", str(data_dir), *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def one_line(stderr: str) -> str:
    """A refusal: exactly one line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def change_password(
    broker: BrokerProcess, username: str, old: str, new: str, timeout: float = 15.0
) -> signin_pb2.ChangePasswordResponse:
    """Call ChangePassword once through a fresh channel (raises ``grpc.RpcError`` on a status).

    Both passwords must come from ``tests.secrets_registry``: the final scan looks for them.
    """
    secrets_registry.require(old)
    secrets_registry.require(new)
    with broker.channel() as channel:
        response: signin_pb2.ChangePasswordResponse = signin_pb2_grpc.SignInServiceStub(
            channel
        ).ChangePassword(
            signin_pb2.ChangePasswordRequest(username=username, old_password=old, new_password=new),
            timeout=timeout,
        )
    return response


def _json(line: str) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass
class AgentProcess:
    """An enrolled ``pta-agent run`` process."""

    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    agent_id: str

    @staticmethod
    def enrol(broker: BrokerProcess, tenant: str, state_dir: Path) -> None:
        """Enrol a new agent of ``tenant`` into ``state_dir`` with a fresh token."""
        enrolled = enrol_cli(broker, broker.token(tenant), state_dir)
        assert enrolled.returncode == 0, enrolled.stderr

    @staticmethod
    def launch(
        state_dir: Path, slapd: Slapd | None, log_path: Path, *extra: str, log_level: str = "info"
    ) -> subprocess.Popen[bytes]:
        """Run ``pta-agent run`` for an enrolled state directory, logging to ``log_path``.

        With ``slapd`` the agent gets one catch-all directory by flags; without, ``extra``
        must configure its directories (``--config FILE``). At ``log_level`` debug the agent
        logs each validation (``validation.completed``, with its request id).
        """
        flags = ["--ldap-url", slapd.url, "--base-dn", slapd.base_dn] if slapd else []
        return subprocess.Popen(
            [
                str(BIN / "pta-agent"),
                f"--log-level={log_level}",
                "run",
                "--state-dir",
                str(state_dir),
                *flags,
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_path.open("ab"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @classmethod
    def start(
        cls,
        broker: BrokerProcess,
        slapd: Slapd | None,
        tenant: str,
        name: str,
        *extra: str,
        log_level: str = "info",
    ) -> AgentProcess:
        """Enrol a new agent for ``tenant`` and run it until the broker sees it connected."""
        state_dir = broker.data_dir.parent / name
        log_path = broker.data_dir.parent / f"{name}.log"
        cls.enrol(broker, tenant, state_dir)
        agent_id = json.loads((state_dir / "agent.json").read_text())["agent_id"]
        process = cls.launch(state_dir, slapd, log_path, *extra, log_level=log_level)
        agent = cls(state_dir=state_dir, log_path=log_path, process=process, agent_id=agent_id)
        try:
            wait_for(
                lambda: (
                    any(e.get("agent_id") == agent_id for e in broker.log_events("agent.connected"))
                    or process.poll() is not None
                ),
                what=f"agent {agent_id} to connect",
            )
        except AssertionError:
            _stop(process)  # Never connected: not left running after the failed test.
            raise
        assert process.poll() is None, log_path.read_text()[-3000:]
        return agent

    def credentials(self) -> grpc.ChannelCredentials:
        """This agent's own mutual-TLS credentials, as it dials the agent endpoint."""
        return agent_credentials(self.state_dir)

    def log_events(self, event: str) -> list[dict[str, object]]:
        """Return the agent's JSON log lines for one event."""
        lines = self.log_path.read_text().splitlines()
        return [e for line in lines if event in line and (e := _json(line)) and e["event"] == event]

    def validated(self) -> set[str]:
        """The request ids this agent checked (its ``validation.completed``: debug level)."""
        return {str(e["request_id"]) for e in self.log_events("validation.completed")}

    def stop(self) -> None:
        """Stop the agent (SIGTERM, then SIGKILL)."""
        _stop(self.process)


def unread_by(port: int) -> int:
    """Bytes sent to the server on 127.0.0.1:``port`` that it has not read yet (Linux).

    The kernel's receive queues of the server's connected sockets (``/proc/net/tcp``): more
    than zero while the server is stopped (SIGSTOP) means a request reached it and waits.
    """
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:  # ESTABLISHED
            unread += int(queues.split(":")[1], 16)
    return unread


def agent_credentials(state_dir: Path) -> grpc.ChannelCredentials:
    """Mutual-TLS channel credentials made of an agent state directory's files."""
    return grpc.ssl_channel_credentials(
        (state_dir / "ca.pem").read_bytes(),
        (state_dir / "tls.key").read_bytes(),
        (state_dir / "tls.pem").read_bytes(),
    )


class SignInLoad:
    """Sign-ins from several threads until a deadline, every answer checked."""

    def __init__(
        self,
        broker: BrokerProcess,
        domain: str,
        seconds: float,
        *,
        tolerate_unavailable: bool = False,
    ) -> None:
        """Prepare a load on ``domain`` that stops after ``seconds``.

        With ``tolerate_unavailable``, an UNAVAILABLE answer (a definite "no answer now") is
        counted apart instead of as a failure.
        """
        self.broker = broker
        self.domain = domain
        self.tolerate_unavailable = tolerate_unavailable
        self.statuses: collections.Counter[str] = collections.Counter()
        self.stop = time.monotonic() + seconds
        self.failures: list[str] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._creds = grpc.ssl_channel_credentials(broker.ca_file.read_bytes())
        #: One wrong password for the whole load: the broker's repeat memory answers its
        #: repeats, as it would a user retyping the same typo.
        self.wrong_password = secrets_registry.secret("wrong-load-pw")

    def run_threads(self, threads: int = 4) -> None:
        """Run the load from ``threads`` threads, half on fresh channels, half on held ones."""
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(self.run, fresh_channels=i % 2 == 0) for i in range(threads)]
            for future in futures:
                future.result()

    def _one(self, channel: grpc.Channel, uid: str, password: str, expected: int) -> None:
        secrets_registry.require(password)
        try:
            reply = signin_pb2_grpc.SignInServiceStub(channel).SignIn(
                signin_pb2.SignInRequest(username=f"{uid}@{self.domain}", password=password),
                timeout=10,
            )
            failure = "" if reply.outcome == expected else str(reply)
            status = "OK"
        except grpc.RpcError as error:
            status = error.code().name
            tolerated = self.tolerate_unavailable and status == "UNAVAILABLE"
            failure = "" if tolerated else f"{status}: {error.details()}"
        with self._lock:
            self.statuses[status] += 1
            self.answered += 1
            if failure:
                self.failures.append(failure)

    def run(self, *, fresh_channels: bool) -> None:
        """Sign in until the deadline: on a fresh channel each time, or on one held channel."""
        # Wrong passwords go to a user the directory lacks, so no real account locks.
        cases = [
            ("alice", ALICE_PASSWORD, outcome_pb2.SUCCESS),
            ("nobody", self.wrong_password, outcome_pb2.INVALID_CREDENTIALS),
        ]
        with grpc.secure_channel(self.broker.public, self._creds) as held:
            i = 0
            while time.monotonic() < self.stop:
                uid, password, expected = cases[i % 2]
                i += 1
                if fresh_channels:
                    with grpc.secure_channel(self.broker.public, self._creds) as channel:
                        self._one(channel, uid, password, expected)
                else:
                    self._one(held, uid, password, expected)


def enrol_cli(
    broker: BrokerProcess, token: str, state_dir: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``pta-agent enroll`` with ``token``; the caller checks the outcome."""
    secrets_registry.require_token(token)
    return subprocess.run(
        [
            str(BIN / "pta-agent"),
            "enroll",
            "--broker",
            broker.public,
            "--token",
            token,
            "--state-dir",
            str(state_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def signin_cli(
    broker: BrokerProcess, username: str, stdin: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``pta-signin --password-stdin`` against ``broker``, feeding it ``stdin``.

    Each line of ``stdin`` (a password, a new password, a code) must be registered.
    """
    for line in stdin.splitlines():
        secrets_registry.require(line, "line of a password prompt")
    return subprocess.run(
        [
            str(BIN / "pta-signin"),
            "--broker",
            broker.public,
            "--ca-file",
            str(broker.ca_file),
            "--password-stdin",
            *extra,
            username,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def listeners() -> Iterator[tuple[str, str, int]]:
    """Yield (``tcp`` or ``tcp6``, address, port) of each listening TCP socket on the machine.

    Read from ``/proc/net``: what the kernel has bound, whatever the server says it did.  IPv6
    addresses are reported as ``ipv6``: a test only needs to see that there is one.
    """
    for family in ("tcp", "tcp6"):
        for line in (Path("/proc/net") / family).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # TCP_LISTEN
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                shown = socket.inet_ntoa(raw[::-1]) if len(raw) == 4 else "ipv6"  # little-endian
                yield family, shown, int(port, 16)
