"""``make demo``: a directory, a broker and an agent on this machine, and sign-ins.

Every piece is the real program started the way an operator would start it (the console
scripts, in their own processes, over real TLS on 127.0.0.1), so what the demo shows is what a
deployment does. Ctrl-C stops everything; nothing is left running or on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import grpc
import jwt
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from pta import logging as pta_logging
from pta.v1 import signin_pb2, signin_pb2_grpc
from tooling.cluster_demo import cluster_story
from tooling.localrun import BIN, LocalDeployment
from tooling.slapd import DirectoryUser, Slapd

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
OFFICE = "10.0.0.0/8"
OFFICE_IP = "10.1.2.3"
ATTACKER = "198.51.100.7"
#: The serving broker applies a CLI change within a quarter of a second.
POLICY_APPLIES = 0.5
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
    parser = argparse.ArgumentParser(prog="python -m tooling.demo", description=__doc__)
    parser.add_argument(
        "--exit", action="store_true", help="stop after the sign-ins instead of waiting for Ctrl-C"
    )
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="N > 1: a cluster of N brokers on a private PostgreSQL, agents at every one,"
        " one of them killed on the way (see tooling/cluster_demo.py)",
    )
    args = parser.parse_args(argv)
    pta_logging.configure(level="warning")
    workdir = Path(tempfile.mkdtemp(prefix="pta-demo-"))
    demo = LocalDeployment(workdir)
    try:
        with Slapd(users=USERS) as slapd:
            if args.brokers > 1:
                passwords = {user.uid: user.password for user in USERS}
                cluster_story(
                    demo,
                    slapd,
                    brokers=args.brokers,
                    domain=DOMAIN,
                    users=passwords,
                    say=say,
                    step=step,
                )
            else:
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
    mfa_key = demo.workdir / "mfa.key"
    demo.run("pta-broker", "mfa", "keygen", str(mfa_key))
    # The demo's client stands in for a sign-in front end, whose client_ip the broker believes.
    demo.start_broker("--mfa-key-file", str(mfa_key), "--trusted-proxy", "127.0.0.1/32")
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

    _policy_story(demo, public, ca_file)

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


def _signin(
    demo: LocalDeployment, public: str, ca_file: str, user: str, stdin: str, *extra: str
) -> tuple[int, str]:
    return demo.attempt(
        "pta-signin",
        *("--broker", public, "--ca-file", ca_file, "--password-stdin", *extra),
        f"{user}@{DOMAIN}",
        stdin=stdin,
    )


def _policy_story(demo: LocalDeployment, public: str, ca_file: str) -> None:
    step("smart lockout: pta-broker tenant policy demo --lockout-threshold 3")
    demo.broker_cli(
        "tenant", "policy", "demo", "--lockout-threshold", "3", "--familiar-network", OFFICE
    )
    time.sleep(POLICY_APPLIES)
    for line in demo.broker_cli("tenant", "show", "demo").splitlines():
        if "directory" in line or "WARNING" in line:
            say(f"    {line.strip()}  (reported by the agent)")
    for n in range(5):
        code, answer = _signin(
            demo, public, ca_file, "bob", f"guess-{n}\n", "--client-ip", ATTACKER
        )
        say(f"    bob from {ATTACKER}, guess {n + 1}: {answer}  [exit {code}]")
    code, answer = _signin(demo, public, ca_file, "bob", "Builder-2024\n", "--client-ip", OFFICE_IP)
    say(f"    bob from the office {OFFICE_IP}, right password: {answer}  [exit {code}]")
    say("    3 guesses reached the directory (it locks after 5); the rest never left the broker")

    step("MFA step-up from unfamiliar places: --mfa unfamiliar, pta-broker mfa enroll")
    demo.broker_cli("tenant", "policy", "demo", "--mfa", "unfamiliar")
    uri = demo.broker_cli(
        "mfa", "enroll", "--tenant", "demo", f"alice@{DOMAIN}", "--mfa-key-file",
        str(demo.workdir / "mfa.key"),
    )  # fmt: skip
    shown = uri.splitlines()[0].split("?")[0]
    say(f"    {shown}?secret=…  (shown once; its QR code goes into the user's phone)")
    time.sleep(POLICY_APPLIES)
    code, answer = _signin(
        demo, public, ca_file, "alice", f"Wonderland-42\n{_phone(uri)}\n",
        "--client-ip", "192.0.2.10", "--token",
    )  # fmt: skip
    say(f"    alice from 192.0.2.10: MFA_REQUIRED, the demo types the phone's code  [exit {code}]")

    step("the token the application gets, checked against GetSigningKeys")
    if code == 0:
        for name, value in _verified(public, ca_file, answer).items():
            say(f"    {name:>6}: {value}")


def _phone(uri: str) -> str:
    """What an authenticator app shows now for the ``otpauth://`` URI (the demo's phone)."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri.splitlines()[0]).query)
    secret = query["secret"][0]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return TOTP(key, 6, SHA1(), 30).generate(int(time.time())).decode()  # noqa: S303 - RFC 6238


def _verified(public: str, ca_file: str, token: str) -> dict[str, object]:
    credentials = grpc.ssl_channel_credentials(Path(ca_file).read_bytes())
    with grpc.secure_channel(public, credentials) as channel:
        keys = signin_pb2_grpc.SignInServiceStub(channel).GetSigningKeys(
            signin_pb2.GetSigningKeysRequest(), timeout=10
        )
    key = jwt.PyJWKSet.from_json(keys.jwks_json)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, object] = jwt.decode(token, key, algorithms=["EdDSA"], issuer=keys.issuer)
    return claims


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
