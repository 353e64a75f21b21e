"""``pta-broker``: serve, and manage tenants and enrolment tokens.

Management commands open the same store as the serving brokers, so they work while they run:
the SQLite file in a broker's data dir (``--data-dir``), or the PostgreSQL database a cluster
of brokers shares (``--store URL`` or ``PTA_STORE``, which wins over a data dir).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from broker.cli import banned as banned_commands
from broker.cli import policy as policy_commands
from broker.config import DEFAULT_LISTEN, BrokerConfig, load_config, store_url
from broker.ownership import CannotStart
from broker.server import Broker
from broker.store import open_store
from broker.store.records import STATUS_FRESHNESS
from broker.trust.ca import CertificateAuthority
from pta import logging as pta_logging
from pta.config import parse_duration
from pta.errors import InvalidRequest, PtaError, StoreUnavailable
from pta.tokens import TOKEN_ID, parse_token

if TYPE_CHECKING:
    from broker.store.protocols import Store

log = structlog.get_logger()
DEFAULT_ENROLMENT_TTL = "1h"
#: The serving broker reports its streams every second; older reports are of a stopped broker.


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pta-broker", description=__doc__)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=["json", "console"], default=None)
    commands = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        """Where the store is: a broker's data dir (SQLite), or a cluster's shared store."""
        p.add_argument("--data-dir", default=os.environ.get("PTA_BROKER_DATA_DIR"), required=False)
        p.add_argument(
            "--store",
            metavar="URL",
            help="postgresql://USER@HOST:PORT/DB shared by a cluster of brokers (or PTA_STORE)",
        )

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

    tenant = commands.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True
    )
    add = tenant.add_parser("add", help="create a tenant owning one or more domains")
    add.add_argument("name")
    add.add_argument("--domain", action="append", required=True, help="a verified UPN suffix")
    data_dir(add)
    listing = tenant.add_parser("list", help="list tenants and their domains")
    listing.add_argument("--json", action="store_true")
    data_dir(listing)

    policy_commands.add_parsers(commands, tenant, data_dir)
    banned_commands.add_parser(tenant, data_dir)

    token = commands.add_parser("token", help="manage enrolment tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="print a one-time enrolment token")
    create.add_argument("--tenant", required=True)
    create.add_argument("--ttl", default=DEFAULT_ENROLMENT_TTL, help="validity (default 1h)")
    data_dir(create)
    tlist = token.add_parser("list", help="list tokens (never their secrets)")
    tlist.add_argument("--json", action="store_true")
    data_dir(tlist)
    delete = token.add_parser("delete", help="delete a token by id")
    delete.add_argument("token_id")
    data_dir(delete)
    agents = commands.add_parser(
        "agents", aliases=["agent"], help="list and revoke agents"
    ).add_subparsers(dest="action", required=True)
    alist = agents.add_parser("list", help="every agent, its certificate and live streams")
    alist.add_argument("--json", action="store_true")
    data_dir(alist)
    revoke = agents.add_parser("revoke", help="cut an agent off now and for good")
    revoke.add_argument("agent_id")
    data_dir(revoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    pta_logging.configure(
        level=args.log_level, json=None if args.log_format is None else args.log_format == "json"
    )
    os.umask(0o077)  # The CA key, the store and its journal are the owner's alone.
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "mfa" and args.action == "keygen":
            return policy_commands.keygen(args.file)
        opened = _open(args)
        if opened is None:
            return 2
        store, data = opened
        try:
            return _manage(args, store, data)
        finally:
            store.close()
    except StoreUnavailable as error:
        sys.stderr.write(f"pta-broker: the store does not answer ({error.detail})\n")
        return 1
    except (PtaError, ValueError, OSError, CannotStart) as error:  # OSError: a file missing
        sys.stderr.write(f"pta-broker: {getattr(error, 'message', error)}\n")
        return 1


def _open(args: argparse.Namespace) -> tuple[Store, Path | None] | None:
    """The store a management command names, and the data dir if by one; None: said why not."""
    if url := store_url(vars(args), os.environ):
        return open_store(url=url), None
    if not args.data_dir:
        sys.stderr.write(
            "pta-broker: --store URL (or PTA_STORE), or --data-dir (or PTA_BROKER_DATA_DIR),"
            " is required\n"
        )
        return None
    data = Path(args.data_dir)
    if not (data / "ca.pem").exists():
        sys.stderr.write(f"pta-broker: {data} holds no broker: run `pta-broker serve` once\n")
        return None
    return open_store(data), data


def _manage(args: argparse.Namespace, store: Store, data: Path | None) -> int:
    if args.command == "tenant" and args.action == "banned-passwords":
        return banned_commands.run(args, store)
    if args.command in ("lockout", "mfa") or (
        args.command == "tenant" and args.action in ("policy", "show")
    ):
        return policy_commands.run(args, store)
    if args.command == "tenant":
        return _tenant(args, store)
    if args.command in ("agent", "agents"):
        return _agents(args, store)
    return _token(args, store, data)


def _agents(args: argparse.Namespace, store: Store) -> int:
    if args.action == "revoke":
        if not store.agents.revoke(args.agent_id):
            sys.stderr.write(f"pta-broker: no agent {args.agent_id}\n")
            return 1
        sys.stdout.write(f"revoked {args.agent_id}: its streams are cut within a second\n")
        return 0
    rows: list[dict[str, Any]] = [
        {
            "id": a.agent_id,
            "tenant": a.tenant,
            "hostname": a.hostname,
            "revoked": a.revoked_at is not None,
            "connected": bool(a.connections),
            "version": a.connections[-1].version if a.connections else a.version,
            "domains": sorted({d for c in a.connections for d in c.domains}),
            "serial": a.certificates[-1][0] if a.certificates else "",
            "not_after": _iso(a.certificates[-1][1]) if a.certificates else "",
            # Every certificate that can still connect: more than one only while it renews.
            "certificates": [{"serial": s, "not_after": _iso(t)} for s, t in a.certificates],
            "in_flight": sum(c.in_flight for c in a.connections),
            "last_heartbeat": max((c.last_seen for c in a.connections), default=None),
            "streams": len(a.connections),
            # Which brokers hold its streams (one id per broker of a cluster).
            "brokers": sorted({c.broker_id for c in a.connections}),
        }
        for a in store.agents.list(fresh_within=STATUS_FRESHNESS)
    ]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for row in rows:
        state = "revoked" if row["revoked"] else "connected" if row["connected"] else "offline"
        certs = ", ".join(f"{c['serial']} until {c['not_after']}" for c in row["certificates"])
        certs = certs or "none usable"
        sys.stdout.write(
            f"{row['id']}\t{row['tenant']}\t{state}\t{' '.join(row['domains']) or '-'}"
            f"\tcertificates {certs}\tin flight {row['in_flight']}"
            f"\tbrokers {' '.join(row['brokers']) or '-'}\n"
        )
    return 0


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


def _tenant(args: argparse.Namespace, store: Store) -> int:
    if args.action == "add":
        store.add_tenant(args.name, args.domain)
        sys.stdout.write(f"tenant {args.name} owns {', '.join(args.domain)}\n")
        return 0
    tenants = store.tenants()
    if args.json:
        sys.stdout.write(json.dumps(tenants, indent=2) + "\n")
        return 0
    for name, domains in tenants.items():
        sys.stdout.write(f"{name}\t{' '.join(domains)}\n")
    return 0


def _token(args: argparse.Namespace, store: Store, data: Path | None) -> int:
    if args.action == "create":
        # The token pins the CA agents must find: the data dir's, or the one the cluster's
        # brokers hold (claimed in the store by the first of them).
        fingerprint = (
            CertificateAuthority.load_or_create(data).fingerprint if data else store.cluster_ca()
        )
        if fingerprint is None:
            sys.stderr.write(
                "pta-broker: no broker has served this store yet: start one with"
                " `pta-broker serve --store …` first (its CA is what tokens pin)\n"
            )
            return 2
        token = store.create_token(args.tenant, parse_duration(args.ttl), fingerprint)
        sys.stdout.write(f"{token}\n")
        return 0
    if args.action == "delete":
        token_id = _token_id(args.token_id)
        if not store.delete_token(token_id):
            sys.stderr.write(f"pta-broker: no token {token_id}\n")
            return 1
        sys.stdout.write(f"deleted token {token_id}\n")
        return 0
    rows = [
        {
            "id": t.token_id,
            "tenant": t.tenant,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "used": t.used_at is not None,
            "expired": t.expires_at <= time.time(),
        }
        for t in store.list_tokens()
    ]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for row in rows:
        state = "used" if row["used"] else "expired" if row["expired"] else "valid"
        sys.stdout.write(f"{row['id']}\t{row['tenant']}\t{state}\n")
    return 0


def _token_id(text: str) -> str:
    """A token's id, from the id itself or from a whole token (whose secret is never echoed).

    Raises:
        InvalidRequest: When it is neither; the message does not repeat what was given.
    """
    if TOKEN_ID.fullmatch(text):
        return text
    try:
        return parse_token(text).token_id
    except PtaError:
        raise InvalidRequest(
            "give the token's id (16 hex digits, as `token list` shows) or the whole token"
        ) from None


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
