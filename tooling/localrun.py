"""The real programs run on this machine, the way an operator starts them: for demo and bench.

A :class:`LocalDeployment` starts ``pta-broker serve`` on free loopback ports, manages tenants
and tokens through the CLI, enrols and runs agents, and stops every process it started. It
imports none of the programs: it runs their console scripts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Callable

    from tooling.slapd import Slapd

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll until ``predicate`` holds.

    Raises:
        RuntimeError: When it does not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class LocalDeployment:
    """A broker and its agents as child processes, logs in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        """Prepare; :meth:`start_broker` starts the broker."""
        self.workdir = workdir
        self.data_dir = workdir / "broker"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.public = ""
        self.agent_endpoint = ""
        self.ca_file = Path()
        #: The shared store the broker serves (a PostgreSQL URL), or "" for its data dir's.
        self.store_url = ""
        #: Every broker started: name -> public endpoint.
        self.brokers: dict[str, str] = {}

    def __enter__(self) -> Self:
        """Use as a context manager: every process is stopped on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop every process."""
        self.stop()

    def spawn(self, name: str, program: str, *args: str) -> subprocess.Popen[bytes]:
        """Start one of our programs in the background, its log in the work directory."""
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - our own console scripts
            [str(BIN / program), *args], stdout=subprocess.DEVNULL, stderr=log
        )
        self.processes[name] = process
        return process

    def attempt(self, program: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
        """Run one of our programs to completion: its exit code and what it printed."""
        done = subprocess.run(  # noqa: S603 - our own console scripts
            [str(BIN / program), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        return done.returncode, (done.stdout.strip() or done.stderr.strip())

    def run(self, program: str, *args: str, stdin: str | None = None) -> str:
        """Run one of our programs, which must succeed, and return what it printed.

        Raises:
            RuntimeError: When it fails (with what it said).
        """
        code, output = self.attempt(program, *args, stdin=stdin)
        if code != 0:
            raise RuntimeError(f"{program} {args[0]} failed: {output[-500:]}")
        return output

    def start_broker(self, *extra: str, store_url: str = "", name: str = "broker") -> str:
        """Start a broker on free loopback ports, wait until it serves; its public endpoint.

        ``store_url``: a PostgreSQL store to serve (and to manage through) instead of the
        data dir's SQLite. A broker after the first on one store joins its cluster: the
        first one's CA is copied into its data dir, as an operator does. The first broker's
        endpoints are :attr:`public`, :attr:`agent_endpoint` and :attr:`ca_file`.
        """
        data_dir = self.workdir / name
        first = not self.brokers
        if first:
            self.data_dir, self.store_url = data_dir, store_url
        elif store_url:
            data_dir.mkdir(mode=0o700, exist_ok=True)
            for ca in ("ca.pem", "ca.key"):
                shutil.copy2(self.data_dir / ca, data_dir / ca)
        if store_url:
            extra = (*extra, "--store", store_url)
        broker = self.spawn(
            name,
            "pta-broker",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            *extra,
        )
        endpoints = data_dir / "endpoints.json"
        wait_until(lambda: endpoints.exists() or broker.poll() is not None, name)
        if broker.poll() is not None:
            raise RuntimeError(f"{name} did not start: see {name}.log")
        info = json.loads(endpoints.read_text())
        self.brokers[name] = info["public"]
        if first:
            self.public, self.agent_endpoint = info["public"], info["agent"]
            self.ca_file = Path(info["ca_file"])
        return str(info["public"])

    def connected(self, broker: str = "broker") -> int:
        """How many agent streams ``broker`` has welcomed so far (from its log)."""
        log = self.workdir / f"{broker}.log"
        return log.read_text().count('"agent.connected"') if log.exists() else 0

    def broker_cli(self, *args: str) -> str:
        """Run a ``pta-broker`` management command against this broker's store."""
        where = (
            ("--store", self.store_url) if self.store_url else ("--data-dir", str(self.data_dir))
        )
        return self.run("pta-broker", *args, *where)

    def enrol_agent(self, name: str, tenant: str) -> str:
        """Enrol a new agent of ``tenant`` with a fresh one-time token; return its message."""
        token = self.broker_cli("token", "create", "--tenant", tenant)
        return self.run(
            "pta-agent",
            "enroll",
            "--broker",
            self.public,
            "--token",
            token,
            "--state-dir",
            str(self.workdir / name),
        )

    def run_agent(self, name: str, slapd: Slapd, *extra: str) -> None:
        """Run an enrolled agent against ``slapd`` and wait until the broker sees it.

        ``extra``: more ``pta-agent run`` flags.
        """
        bootstrap = next(iter(self.brokers))
        before = self.connected(bootstrap)
        agent = self.spawn(
            name,
            "pta-agent",
            "run",
            "--state-dir",
            str(self.workdir / name),
            "--ldap-url",
            slapd.url,
            "--base-dn",
            slapd.base_dn,
            *extra,
        )
        wait_until(
            lambda: self.connected(bootstrap) > before or agent.poll() is not None,
            f"{name} to connect",
        )
        if agent.poll() is not None:
            raise RuntimeError(f"{name} did not start: see {name}.log")

    def alive(self) -> bool:
        """Whether every process is still running."""
        return all(p.poll() is None for p in self.processes.values())

    def stop(self) -> None:
        """Stop every process, newest (agents) first."""
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
