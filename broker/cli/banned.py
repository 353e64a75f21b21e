"""``pta-broker tenant banned-passwords``: a tenant's own banned terms (docs/policy.md).

They go to the store the serving broker reads; it applies a change within a quarter of a
second, as every policy change (and so does every broker of a shared store).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from broker.cli import render
from broker.cli.backend import ask
from broker.policy.banned_passwords import MAX_TERM, MIN_TERM
from broker.policy.password_protection import MAX_TENANT_TERMS
from pta.v1 import admin_pb2

if TYPE_CHECKING:
    import argparse

    from broker.cli.backend import Backend


def add_parser(tenant: argparse._SubParsersAction[argparse.ArgumentParser], managed: Any) -> None:
    """Add ``tenant banned-passwords``."""
    banned = tenant.add_parser(
        "banned-passwords",
        help="a tenant's own banned password terms (besides the global list)",
        description=(
            f"Terms are one word of {MIN_TERM} to {MAX_TERM} characters after lower-casing and"
            f" the usual substitutions (P@ss = pass); at most {MAX_TENANT_TERMS} a tenant."
            " A new password is refused when it is little more than such terms."
        ),
    )
    banned.add_argument("name", help="the tenant")
    banned.add_argument("--add", nargs="+", default=[], metavar="TERM", help="ban these terms")
    banned.add_argument(
        "--remove", nargs="+", default=[], metavar="TERM", help="ban these terms no more"
    )
    banned.add_argument("--list", action="store_true", help="print the terms (the default)")
    managed(banned)


def run(args: argparse.Namespace, backend: Backend) -> int:
    """Change or list a tenant's banned terms; return the exit code.

    Raises:
        PtaError: No such tenant, a term the list cannot hold, a list too long (nothing
            changes): one line saying why.
    """
    request = admin_pb2.ChangeBannedTermsRequest(tenant=args.name, add=args.add, remove=args.remove)
    answer = ask(backend, request, admin_pb2.ChangeBannedTermsResponse)
    if args.add or args.remove:
        render.note(
            f"tenant {args.name}: {answer.added} added, {answer.removed} removed,"
            f" {len(answer.terms)} banned terms (applies within a second)"
        )
        if not args.list and not args.json:
            return 0
    if args.json:
        render.write_json(render.as_dict(answer)["terms"])
    else:
        sys.stdout.write("".join(f"{t.term}\n" for t in answer.terms))
    return 0
