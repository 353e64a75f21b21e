"""``make demo`` with ``--brokers N``: a cluster of brokers on PostgreSQL, agents at every one.

The real programs again: a private PostgreSQL, N ``pta-broker serve --store URL`` processes
(each with its own data dir, the first one's CA copied into the others', as an operator joins
a broker), two agents enrolled at the first broker that attach to every broker, and sign-ins
through each broker in turn; then one broker is killed (SIGKILL) and sign-ins go on through
the others, over one client channel to all of them (round robin, resent where no agent can
have seen the password), while the agents drop their streams to it once its heartbeat in the
store is stale and keep the others.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import TYPE_CHECKING

import grpc

from pta.failover import brokers as failover_target
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc
from tooling.localrun import wait_until
from tooling.postgres import Postgres

if TYPE_CHECKING:
    from collections.abc import Callable

    from tooling.localrun import LocalDeployment
    from tooling.slapd import Slapd

AGENTS = 2
#: Sign-ins sent over the failover channel once a broker is dead.
AFTER_THE_KILL = 30
GUESSES = 3


def cluster_story(  # noqa: PLR0913 - the demo's parts, by name
    demo: LocalDeployment,
    slapd: Slapd,
    *,
    brokers: int,
    domain: str,
    users: dict[str, str],
    say: Callable[[str], None],
    step: Callable[[str], None],
) -> None:
    """Tell the cluster's story (see the module); raise RuntimeError when a step fails."""
    step(f"OpenLDAP directory (Debian's slapd) at {slapd.url}, base {slapd.base_dn}")
    with Postgres() as postgres:
        step(f"PostgreSQL (Debian's postgresql, a private cluster) at {postgres.url}")
        names = [f"broker-{n}" for n in range(1, brokers + 1)]
        step(f"{brokers} brokers: pta-broker serve --store {postgres.url}")
        for name in names:
            public = demo.start_broker(
                "--trusted-proxy", "127.0.0.1/32", store_url=postgres.url, name=name
            )
            joined = "claims the cluster's CA" if name == names[0] else "joins with its CA"
            say(f"    {name}: {public} ({joined})")
        say(f"    the cluster's CA certificate, for clients: {demo.ca_file}")
        demo.broker_cli("tenant", "add", "demo", "--domain", domain)
        demo.broker_cli("tenant", "policy", "demo", "--lockout-threshold", str(GUESSES))

        step(f"{AGENTS} agents, enrolled at {names[0]}: each attaches to every broker")
        for n in range(1, AGENTS + 1):
            demo.enrol_agent(f"agent-{n}", "demo")
            demo.run_agent(f"agent-{n}", slapd)
        for name in names:
            wait_until(_attached(demo, name), f"both agents at {name}")
        # Each broker reports its streams to the store every second: the listing follows.
        wait_until(lambda: len(_streams(demo)) == AGENTS * brokers, "the agents listing")
        say(f"    streams: {AGENTS} agents x {brokers} brokers = {len(_streams(demo))}")
        named = {(demo.workdir / n / "broker.id").read_text().strip(): n for n in names}
        for agent_id, held in _by_agent(demo).items():
            say(f"    {agent_id}: a stream at each of {', '.join(sorted(named[b] for b in held))}")

        step("a sign-in through each broker")
        alice, password = next(iter(users.items()))
        for name in names:
            answer = _sign_in(demo, demo.brokers[name], alice, password, domain)
            say(f"    via {name}: {alice}@{domain} -> {answer}")

        step(f"{GUESSES} wrong passwords, one at each broker: the cluster locks at its threshold")
        for n, name in zip(range(GUESSES), names * GUESSES, strict=False):
            answer = _sign_in(demo, demo.brokers[name], "bob", f"Wrong-{n}", domain)
            say(f"    via {name}: bob, wrong password #{n + 1} -> {answer}")
        answer = _sign_in(demo, demo.brokers[names[-1]], "bob", users.get("bob", ""), domain)
        say(f"    via {names[-1]}: bob, his right password -> {answer}")
        demo.broker_cli("lockout", "clear", "--tenant", "demo", f"bob@{domain}")

        victim = names[1] if brokers > 1 else names[0]
        step(f"SIGKILL {victim}; {AFTER_THE_KILL} sign-ins over one channel to all brokers")
        endpoint = json.loads((demo.workdir / victim / "endpoints.json").read_text())["agent"]
        demo.processes[victim].send_signal(signal.SIGKILL)
        demo.processes[victim].wait()
        killed = time.monotonic()
        answers = asyncio.run(_through_all(demo, alice, password, domain))
        tally = {name: answers.count(name) for name in sorted(set(answers))}
        say(f"    answers: {tally}")
        if answers.count("SUCCESS") != AFTER_THE_KILL:
            raise RuntimeError(f"sign-ins after the kill: {tally}")
        say("    every sign-in answered by the brokers still up")
        wait_until(lambda: _dropped(demo, endpoint), f"the agents to drop {victim}", timeout=20)
        say(
            f"    both agents dropped their stream to {victim} {time.monotonic() - killed:.1f} s"
            " after the kill (its heartbeat in the store went stale: 5 s), and kept the others"
        )


def _attached(demo: LocalDeployment, name: str) -> Callable[[], bool]:
    return lambda: demo.connected(name) >= AGENTS


def _by_agent(demo: LocalDeployment) -> dict[str, list[str]]:
    """The operator's listing: each agent's id and the brokers (by id) holding its streams."""
    listed = json.loads(demo.broker_cli("agents", "list", "--json"))
    return {str(agent["id"]): list(agent["brokers"]) for agent in listed}


def _streams(demo: LocalDeployment) -> list[tuple[str, str]]:
    """(agent, broker) of every stream the listing shows."""
    return [(agent, broker) for agent, held in _by_agent(demo).items() for broker in held]


def _dropped(demo: LocalDeployment, endpoint: str) -> bool:
    """Whether every agent has dropped its link to the broker at ``endpoint`` (their logs)."""
    logs = [demo.workdir / f"agent-{n}.log" for n in range(1, AGENTS + 1)]
    return all(
        any('"mesh.dropping"' in line and endpoint in line for line in log.read_text().splitlines())
        for log in logs
    )


def _sign_in(demo: LocalDeployment, public: str, uid: str, password: str, domain: str) -> str:
    code, answer = demo.attempt(
        "pta-signin",
        *("--broker", public, "--ca-file", str(demo.ca_file), "--password-stdin"),
        f"{uid}@{domain}",
        stdin=password + "\n",
    )
    return f"{answer.splitlines()[0] if answer else ''} [exit {code}]"


async def _through_all(demo: LocalDeployment, uid: str, password: str, domain: str) -> list[str]:
    """Sign in AFTER_THE_KILL times over one channel to every broker; each outcome's name."""
    target = failover_target(",".join(demo.brokers.values()))
    credentials = grpc.ssl_channel_credentials(demo.ca_file.read_bytes())
    answers = []
    async with grpc.aio.secure_channel(
        target.target, credentials, options=target.options()
    ) as channel:
        stub = signin_pb2_grpc.SignInServiceStub(channel)
        for _ in range(AFTER_THE_KILL):
            try:
                reply = await stub.SignIn(
                    signin_pb2.SignInRequest(username=f"{uid}@{domain}", password=password),
                    timeout=10,
                )
                answers.append(outcome_pb2.Outcome.Name(reply.outcome))
            except grpc.aio.AioRpcError as error:
                answers.append(error.code().name)
    return answers
