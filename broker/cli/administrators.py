"""``pta-broker admin``: issue, revoke and list administrators of the AdminService.

Run on a broker's machine: issuing signs with the CA's key in the broker's data dir, and the
certificate is recorded in the store the brokers read (the data dir's SQLite, or with
``--store`` the cluster's PostgreSQL, where every broker then accepts it). Revoking a name
refuses its next call at every broker.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.admin.tenants import iso
from broker.cli import render
from broker.cli.backend import A_STORE, Usage
from broker.config import store_url
from broker.store import open_store
from broker.trust import administrators
from broker.trust.ca import CA_CERT_FILE, CertificateAuthority
from pta.config import parse_duration

if TYPE_CHECKING:
    import argparse

    from broker.store.protocols import Store


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], data_dir: Any
) -> None:
    """Add ``admin issue``, ``admin revoke`` and ``admin list``."""
    admin = commands.add_parser(
        "admin", help="administrators of the AdminService (--broker, --admin-cert)"
    ).add_subparsers(dest="action", required=True)
    issue = admin.add_parser("issue", help="write an administrator's key and certificate")
    issue.add_argument("--name", required=True, help="who: named in every audit line")
    issue.add_argument("--out", required=True, type=Path, help="directory to write (0700)")
    issue.add_argument("--lifetime", default="90d", help="certificate lifetime (default 90d)")
    data_dir(issue)
    revoke = admin.add_parser("revoke", help="refuse an administrator's certificates from now on")
    revoke.add_argument("name")
    data_dir(revoke)
    listing = admin.add_parser("list", help="administrators and their certificates")
    listing.add_argument("--json", action="store_true")
    data_dir(listing)


def run(args: argparse.Namespace) -> int:
    """Run an ``admin`` command; return the exit code.

    Raises:
        Usage: No store named, or no CA to issue with.
    """
    data = Path(args.data_dir) if args.data_dir else None
    url = store_url(vars(args), os.environ)
    if data is not None and not (data / CA_CERT_FILE).exists():
        raise Usage(f"{data} holds no broker: run `pta-broker serve` once")
    if args.action == "issue" and data is None:
        raise Usage("--data-dir is required: an administrator is issued with the broker's CA")
    if data is None and not url:
        raise Usage(f"{A_STORE} is required")
    store = open_store(url=url) if url else open_store(data)
    try:
        return _run(args, store, data)
    finally:
        store.close()


def _run(args: argparse.Namespace, store: Store, data: Path | None) -> int:
    if args.action == "issue":
        assert data is not None
        ca = CertificateAuthority.load_or_create(data)
        if store_url(vars(args), os.environ):
            _same_cluster(store, ca)
        lifetime = datetime.timedelta(seconds=parse_duration(args.lifetime))
        cert = administrators.issue(ca, store.administrators, args.name, args.out, lifetime)
        render.say(
            f"administrator {args.name}: {args.out / administrators.KEY_FILE} (key, 0600),"
            f" {administrators.CERT_FILE}, {administrators.CA_FILE}; valid until"
            f" {cert.not_valid_after_utc.isoformat(timespec='seconds')}"
        )
        render.note(
            f"use: pta-broker --broker HOST:AGENT_PORT --admin-cert {args.out} … (any command)"
        )
        return 0
    if args.action == "revoke":
        revoked = store.administrators.revoke(administrators.check_name(args.name))
        if not revoked and not any(a.name == args.name for a in store.administrators.list()):
            sys.stderr.write(f"pta-broker: no administrator {args.name}\n")
            return 1
        render.say(f"revoked {args.name}: {revoked} certificate(s), refused from the next call")
        return 0
    rows = [
        {
            "name": a.name,
            "serial": a.serial,
            "issued_at": iso(a.issued_at),
            "not_after": iso(a.not_after),
            "revoked": a.revoked_at is not None,
        }
        for a in store.administrators.list()
    ]
    if args.json:
        render.write_json(rows)
        return 0
    for row in rows:
        state = "revoked" if row["revoked"] else f"until {row['not_after']}"
        render.say(f"{row['name']}\t{row['serial']}\t{state}")
    return 0


def _same_cluster(store: Store, ca: CertificateAuthority) -> None:
    """Refuse to record a certificate of one CA in the store of a cluster with another."""
    claimed = store.cluster_ca()
    if claimed is not None and claimed != ca.fingerprint:
        raise Usage(
            "this data dir's CA is not the cluster's (the store was claimed by another CA):"
            " use the data dir of one of the cluster's brokers"
        )
