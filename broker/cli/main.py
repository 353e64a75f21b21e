"""``pta-broker``: serve, and manage tenants, tokens, agents, lockouts and authenticators.

Management commands work on the same store as the serving brokers, so they work while they
run: the SQLite file in a broker's data dir (``--data-dir``), or the PostgreSQL database a
cluster of brokers shares (``--store URL`` or ``PTA_STORE``, which wins over a data dir); or
remotely, at any broker's AdminService (``--broker HOST:PORT --admin-cert DIR``). Either way
they run the same code (:mod:`broker.admin`) and print the same (``--json`` everywhere).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import structlog

from broker.admin.access import DEFAULT_ENROLMENT_TTL
from broker.cli import administrators as admin_commands
from broker.cli import banned as banned_commands
from broker.cli import policy as policy_commands
from broker.cli import render
from broker.cli.backend import Usage, ask, open_backend
from broker.config import DEFAULT_LISTEN, BrokerConfig, load_config
from broker.ownership import CannotStart
from broker.server import Broker
from pta import logging as pta_logging
from pta.errors import PtaError, StoreUnavailable
from pta.v1 import admin_pb2

if TYPE_CHECKING:
    from broker.cli.backend import Backend

log = structlog.get_logger()


def _limit_options(serve: argparse.ArgumentParser) -> None:
    """What bounds a caller: queues, streams, rates."""
    serve.add_argument("--queue-limit", help="sign-ins a tenant may have waiting (default 1024)")
    serve.add_argument(
        "--streams-per-address", help="SignInStreams one address may hold open (default 32)"
    )
    serve.add_argument(
        "--stream-idle-timeout",
        help="end a SignInStream with nothing in flight that sends nothing this long (default 5m)",
    )
    serve.add_argument(
        "--rate-limit", help="sign-ins a second per client address (default: no limit)"
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        help="CIDR of a sign-in front end whose requests' client_ip the rate limit believes",
    )
    serve.add_argument("--rate-burst", help="burst allowed above the rate (default: the rate)")


def _running_options(serve: argparse.ArgumentParser) -> None:
    """How ``serve`` stops, shares its port, and shows itself to Prometheus."""
    serve.add_argument("--grace", help="seconds in-flight sign-ins get at shutdown (default 5)")
    serve.add_argument(
        "--reuse-port",
        action="store_const",
        const="true",
        help="share the listening addresses with other broker processes (SO_REUSEPORT)",
    )
    serve.add_argument(
        "--metrics-listen",
        help="host:port serving Prometheus metrics at /metrics (default: none)",
    )


def data_dir(p: argparse.ArgumentParser) -> None:
    """Where the store is: a broker's data dir (SQLite), or a cluster's shared store."""
    p.add_argument("--data-dir", default=os.environ.get("PTA_BROKER_DATA_DIR"), required=False)
    p.add_argument(
        "--store",
        metavar="URL",
        help="postgresql://USER@HOST:PORT/DB shared by a cluster of brokers (or PTA_STORE)",
    )


def managed(p: argparse.ArgumentParser) -> None:
    """A management command: on a store here, or at a broker's AdminService; --json."""
    data_dir(p)
    p.add_argument(
        "--broker",
        metavar="HOST:PORT",
        help="run it at this broker's AdminService (its agent endpoint) instead",
    )
    p.add_argument(
        "--admin-cert",
        metavar="DIR",
        help="the administrator's key and certificates (`pta-broker admin issue --out DIR`)",
    )
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pta-broker", description=__doc__)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=["json", "console"], default=None)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the broker")
    data_dir(serve)
    serve.add_argument("--listen", help=f"public endpoint (default {DEFAULT_LISTEN})")
    serve.add_argument("--agent-listen", help="agent endpoint (default: public port + 1)")
    serve.add_argument("--agent-endpoint", help="host:port agents dial, if not the enrol host")
    serve.add_argument("--san", action="append", help="extra name for the server certificate")
    serve.add_argument("--signin-timeout", help="longest a sign-in may take (default 10s)")
    serve.add_argument("--agent-cert-lifetime", help="agent certificate lifetime (default 24h)")
    serve.add_argument(
        "--server-cert-lifetime", help="broker server certificate lifetime (default 90d)"
    )
    serve.add_argument("--heartbeat-interval", help="stream heartbeat interval (default 5s)")
    _limit_options(serve)
    _running_options(serve)
    policy_commands.add_serve_options(serve)

    _management_parsers(commands, managed)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    pta_logging.configure(
        level=args.log_level, json=None if args.log_format is None else args.log_format == "json"
    )
    os.umask(0o077)  # The CA key, the store and its journal are the owner's alone.
    try:
        return _run_command(args)
    except Usage as error:
        sys.stderr.write(f"pta-broker: {error}\n")
        return 2
    except StoreUnavailable as error:
        sys.stderr.write(f"pta-broker: the store does not answer ({error.detail})\n")
        return 1
    except (PtaError, ValueError, OSError, CannotStart) as error:  # OSError: a file missing
        sys.stderr.write(f"pta-broker: {getattr(error, 'message', error)}\n")
        return 1


def _management_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    managed: Any,
) -> None:
    """Add the commands that manage the store: here, or at a broker's AdminService."""
    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True
    )
    add = tenant.add_parser("add", help="create a tenant owning one or more domains")
    add.add_argument("name")
    add.add_argument("--domain", action="append", required=True, help="a verified UPN suffix")
    managed(add)
    listing = tenant.add_parser("list", help="list tenants and their domains")
    managed(listing)

    policy_commands.add_parsers(commands, tenant, managed)
    banned_commands.add_parser(tenant, managed)

    token = commands.add_parser("token", help="manage enrolment tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="print a one-time enrolment token")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--ttl", default=DEFAULT_ENROLMENT_TTL, help=f"validity (default {DEFAULT_ENROLMENT_TTL})"
    )
    managed(create)
    tlist = token.add_parser("list", help="list tokens (never their secrets)")
    managed(tlist)
    delete = token.add_parser("delete", help="delete a token by id")
    delete.add_argument("token_id")
    managed(delete)
    agents = commands.add_parser(
        "agents", aliases=["agent"], help="list and revoke agents"
    ).add_subparsers(dest="action", required=True)
    alist = agents.add_parser("list", help="every agent, its certificate and live streams")
    managed(alist)
    revoke = agents.add_parser("revoke", help="cut an agent off now and for good")
    revoke.add_argument("agent_id")
    managed(revoke)
    admin_commands.add_parser(commands, data_dir)


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "mfa" and args.action == "keygen":
        return policy_commands.keygen(args.file)
    if args.command == "admin":
        return admin_commands.run(args)
    backend = open_backend(args)
    try:
        return _manage(args, backend)
    finally:
        backend.close()


def _manage(args: argparse.Namespace, backend: Backend) -> int:
    if args.command == "tenant" and args.action == "banned-passwords":
        return banned_commands.run(args, backend)
    if args.command in ("lockout", "mfa") or (
        args.command == "tenant" and args.action in ("policy", "show")
    ):
        return policy_commands.run(args, backend)
    if args.command == "tenant":
        return _tenant(args, backend)
    if args.command in ("agent", "agents"):
        return _agents(args, backend)
    return _token(args, backend)


def _agents(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "revoke":
        revoked = ask(
            backend,
            admin_pb2.RevokeAgentRequest(agent_id=args.agent_id),
            admin_pb2.RevokeAgentResponse,
        )
        render.show(args, revoked, f"revoked {args.agent_id}: its streams are cut within a second")
        return 0
    listed = ask(backend, admin_pb2.ListAgentsRequest(), admin_pb2.ListAgentsResponse)
    render.show(args, listed, lambda: render.agents_listed(listed), field="agents")
    return 0


def _tenant(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "add":
        added = ask(
            backend,
            admin_pb2.AddTenantRequest(name=args.name, domains=args.domain),
            admin_pb2.Tenant,
        )
        render.show(args, added, f"tenant {added.name} owns {', '.join(added.domains)}")
        return 0
    listed = ask(backend, admin_pb2.ListTenantsRequest(), admin_pb2.ListTenantsResponse)
    if args.json:  # Name -> domains, as scripts have read it since the first release.
        render.write_json({t.name: list(t.domains) for t in listed.tenants})
        return 0
    for t in listed.tenants:
        render.say(f"{t.name}\t{' '.join(t.domains)}")
    return 0


def _token(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "create":
        created = ask(
            backend,
            admin_pb2.CreateTokenRequest(tenant=args.tenant, ttl=args.ttl),
            admin_pb2.CreateTokenResponse,
        )
        render.show(args, created, created.token)
        return 0
    if args.action == "delete":
        deleted = ask(
            backend, admin_pb2.DeleteTokenRequest(id=args.token_id), admin_pb2.DeleteTokenResponse
        )
        render.show(args, deleted, f"deleted token {deleted.id}")
        return 0
    listed = ask(backend, admin_pb2.ListTokensRequest(), admin_pb2.ListTokensResponse)
    render.show(args, listed, lambda: render.tokens_listed(listed), field="tokens")
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = load_config(vars(args), os.environ)
    return asyncio.run(_run(config))


async def _run(config: BrokerConfig) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            os._exit(128 + signum)
        log.info("broker.stopping", signal=signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    async with Broker(config):
        await stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
