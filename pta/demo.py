"""``pta-demo`` (``make demo``): a directory, a broker and an agent on this machine, and sign-ins.

Every piece is the real program started the way an operator would start it (the console
scripts, in their own processes, over real TLS on 127.0.0.1), so what the demo shows is what a
deployment does. Ctrl-C stops everything; nothing is left running or on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from pta import logging as pta_logging
from pta.localrun import BIN, LocalDeployment
from pta.slapd import DirectoryUser, Slapd
from pta.v1 import signin_pb2, signin_pb2_grpc

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


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(prog="pta-demo", description=__doc__)
    parser.add_argument(
        "--exit", action="store_true", help="stop after the sign-ins instead of waiting for Ctrl-C"
    )
    args = parser.parse_args(argv)
    pta_logging.configure(level="warning")
    workdir = Path(tempfile.mkdtemp(prefix="pta-demo-"))
    demo = LocalDeployment(workdir)
    try:
        with Slapd(users=USERS) as slapd:
            _story(demo, slapd, keep_running=not args.exit and sys.stdin.isatty())
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


def _story(demo: LocalDeployment, slapd: Slapd, *, keep_running: bool) -> None:
    step(f"OpenLDAP directory (Debian's slapd) at {slapd.url}, base {slapd.base_dn}")
    for user in USERS:
        say(f"    user {user.uid}@{DOMAIN}  password {user.password}")

    step("broker (the cloud side): pta-broker serve")
    demo.start_broker()
    public, ca_file = demo.public, str(demo.ca_file)
    say(f"    public endpoint {public} (sign-ins, enrolment), agent endpoint {demo.agent_endpoint}")
    say(f"    its CA certificate, for clients: {ca_file}")

    step(f"tenant 'demo' owning {DOMAIN}: pta-broker tenant add")
    demo.broker_cli("tenant", "add", "demo", "--domain", DOMAIN)
    say("    agents enrol with one-time tokens: pta-broker token create (each pins the CA)")

    step("agent (on-premises): pta-agent enroll, then pta-agent run")
    say(f"    {demo.enrol_agent('agent', 'demo')}; keys and certificate 0600")
    demo.run_agent("agent", slapd)
    say("    connected: one mutually authenticated stream, dialled out by the agent")

    step("sign-ins through the client: pta-signin")
    for uid, password, why in SIGN_INS:
        code, answer = demo.attempt(
            "pta-signin",
            *("--broker", public, "--ca-file", ca_file, "--password-stdin", f"{uid}@{DOMAIN}"),
            stdin=password + "\n",
        )
        say(f"    {uid}@{DOMAIN:<12} ({why}): {answer}  [exit {code}]")

    step(f"rough speed: {RATE_SECONDS:.0f} s of sign-ins, {RATE_CONCURRENCY} in flight")
    count, p50 = asyncio.run(_rate(public, demo.ca_file.read_bytes()))
    say(f"    {count / RATE_SECONDS:.0f} sign-ins/s, median {p50:.2f} ms (`make bench` measures)")

    step("try it yourself")
    say(f"    {BIN / 'pta-signin'} --broker {public} --ca-file {ca_file} alice@{DOMAIN}")
    say(f"    {BIN / 'grpcurl'} -cacert {ca_file} {public} list")
    say(
        f"    {BIN / 'grpcurl'} -cacert {ca_file} -d "
        f'\'{{"username":"alice@{DOMAIN}","password":"Wonderland-42"}}\' '
        f"{public} pta.v1.SignInService/SignIn"
    )
    say(f"    logs: {demo.workdir}/broker.log, {demo.workdir}/agent.log")
    if keep_running:
        say("\nrunning; press Ctrl-C to stop everything.")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while demo.alive():
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
