"""``pta-demo`` (``make demo``): a directory, a broker and an agent on this machine, and sign-ins.

Every piece is the real program started the way an operator would start it (the console
scripts, in their own processes, over real TLS on 127.0.0.1), so what the demo shows is what a
deployment does. Ctrl-C stops everything; nothing is left running or on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from pta import logging as pta_logging
from pta.slapd import DirectoryUser, Slapd
from pta.v1 import signin_pb2, signin_pb2_grpc

BIN = Path(sys.executable).parent
DOMAIN = "example.com"
USERS = (
    DirectoryUser(uid="alice", password="Wonderland-42", given_name="Alice", surname="Liddell"),
    DirectoryUser(uid="bob", password="Builder-2024", given_name="Bob", surname="Builder"),
)
#: (user, password typed, what the demo expects to see)
SIGN_INS = (
    ("alice", "Wonderland-42", "a good password"),
    ("alice", "Queen-of-Hearts", "a wrong password"),
    ("mallory", "Anything-1", "a user the directory does not have"),
    ("bob", "Builder-2024", "another user"),
)
RATE_SECONDS = 2.0
RATE_CONCURRENCY = 16


def say(text: str = "") -> None:
    """Print one line of the demo's story."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def step(text: str) -> None:
    """Print a step heading."""
    say(f"\n==> {text}")


def _wait(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Demo:
    """Starts the pieces in order and always stops them, whatever happens in between."""

    def __init__(self, workdir: Path) -> None:
        """Use ``workdir`` for all state and logs."""
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a program in the background, its log in the work directory."""
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        self.processes.append(process)
        return process

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command to completion and return what it printed."""
        return subprocess.run(
            args, input=stdin, capture_output=True, text=True, check=False, timeout=60
        )

    def stop(self) -> None:
        """Stop every program this demo started, newest first."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(prog="pta-demo", description=__doc__)
    parser.add_argument(
        "--exit", action="store_true", help="stop after the sign-ins instead of waiting for Ctrl-C"
    )
    args = parser.parse_args(argv)
    pta_logging.configure(level="warning")
    workdir = Path(tempfile.mkdtemp(prefix="pta-demo-"))
    demo = Demo(workdir)
    try:
        with Slapd(users=USERS) as slapd:
            _story(demo, slapd, workdir, keep_running=not args.exit and sys.stdin.isatty())
    except KeyboardInterrupt:
        say("\nstopping...")
    except RuntimeError as error:
        say(f"\ndemo failed: {error}; logs were in {workdir}")
        for log in sorted(workdir.glob("*.log")):
            say(f"--- {log.name}\n{log.read_text()[-2000:]}")
        return 1
    finally:
        demo.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    say("everything stopped; nothing left running.")
    return 0


def _story(demo: Demo, slapd: Slapd, workdir: Path, *, keep_running: bool) -> None:
    step(f"OpenLDAP directory (Debian's slapd) at {slapd.url}, base {slapd.base_dn}")
    for user in USERS:
        say(f"    user {user.uid}@{DOMAIN}  password {user.password}")

    step("broker (the cloud side): pta-broker serve")
    data = workdir / "broker"
    broker = demo.start(
        "broker",
        str(BIN / "pta-broker"),
        "serve",
        "--data-dir",
        str(data),
        "--listen",
        "127.0.0.1:0",
        "--agent-listen",
        "127.0.0.1:0",
    )
    endpoints = data / "endpoints.json"
    _wait(lambda: endpoints.exists() or broker.poll() is not None, "the broker to serve")
    if broker.poll() is not None:
        raise RuntimeError("the broker did not start")
    info = json.loads(endpoints.read_text())
    public, ca_file = info["public"], info["ca_file"]
    say(f"    public endpoint {public} (sign-ins, enrolment), agent endpoint {info['agent']}")
    say(f"    its CA certificate, for clients: {ca_file}")

    broker_cli = (str(BIN / "pta-broker"),)
    step(f"tenant 'demo' owning {DOMAIN}: pta-broker tenant add")
    demo.run(*broker_cli, "tenant", "add", "demo", "--domain", DOMAIN, "--data-dir", str(data))
    token = demo.run(
        *broker_cli, "token", "create", "--tenant", "demo", "--data-dir", str(data)
    ).stdout.strip()
    say(f"    one-time enrolment token: {token[:22]}... (pins the broker's CA)")

    step("agent (on-premises): pta-agent enroll, then pta-agent run")
    state = workdir / "agent"
    enrolled = demo.run(
        str(BIN / "pta-agent"),
        "enroll",
        "--broker",
        public,
        "--state-dir",
        str(state),
        "--token",
        token,
    )
    if enrolled.returncode != 0:
        raise RuntimeError(f"enrolment failed: {enrolled.stderr.strip()}")
    say(f"    {enrolled.stdout.strip()}; keys and certificate in {state} (0600)")
    agent = demo.start(
        "agent",
        str(BIN / "pta-agent"),
        "run",
        "--state-dir",
        str(state),
        "--ldap-url",
        slapd.url,
        "--base-dn",
        slapd.base_dn,
    )
    broker_log = workdir / "broker.log"
    _wait(
        lambda: "agent.connected" in broker_log.read_text() or agent.poll() is not None,
        "the agent to connect",
    )
    if agent.poll() is not None:
        raise RuntimeError("the agent did not start")
    say("    connected: one mutually authenticated stream, dialled out by the agent")

    step("sign-ins through the client: pta-signin")
    for uid, password, why in SIGN_INS:
        result = demo.run(
            str(BIN / "pta-signin"),
            "--broker",
            public,
            "--ca-file",
            ca_file,
            "--password-stdin",
            f"{uid}@{DOMAIN}",
            stdin=password + "\n",
        )
        answer = (result.stdout or result.stderr).strip()
        say(f"    {uid}@{DOMAIN:<12} ({why}): {answer}  [exit {result.returncode}]")

    step(f"rough speed: {RATE_SECONDS:.0f} s of sign-ins, {RATE_CONCURRENCY} in flight")
    count, p50 = asyncio.run(_rate(public, Path(ca_file).read_bytes()))
    say(f"    {count / RATE_SECONDS:.0f} sign-ins/s, median {p50:.2f} ms (`make bench` measures)")

    step("try it yourself")
    say(f"    {BIN / 'pta-signin'} --broker {public} --ca-file {ca_file} alice@{DOMAIN}")
    say(f"    {BIN / 'grpcurl'} -cacert {ca_file} {public} list")
    say(
        f"    {BIN / 'grpcurl'} -cacert {ca_file} -d "
        f'\'{{"username":"alice@{DOMAIN}","password":"Wonderland-42"}}\' '
        f"{public} pta.v1.SignInService/SignIn"
    )
    say(f"    logs: {workdir}/broker.log, {workdir}/agent.log")
    if keep_running:
        say("\nrunning; press Ctrl-C to stop everything.")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while all(p.poll() is None for p in demo.processes):
            time.sleep(0.5)
        raise RuntimeError("a process stopped unexpectedly")


async def _rate(public: str, ca: bytes) -> tuple[int, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + RATE_SECONDS
    async with grpc.aio.secure_channel(public, grpc.ssl_channel_credentials(ca)) as channel:
        stub = signin_pb2_grpc.SignInServiceStub(channel)
        request = signin_pb2.SignInRequest(username=f"alice@{DOMAIN}", password="Wonderland-42")

        async def worker() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                await stub.SignIn(request, timeout=10)
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(RATE_CONCURRENCY)))
    return len(latencies), statistics.median(latencies) if latencies else 0.0


if __name__ == "__main__":
    sys.exit(main())
