"""``pta-broker tenant banned-passwords``: a tenant's own banned terms (docs/policy.md).

They go to the store the serving broker reads; it applies a change within a quarter of a
second, as every policy change (and so does every broker of a shared store).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from broker.cli.policy import known_tenant
from broker.policy.banned_passwords import MAX_TERM, MIN_TERM, check_term
from broker.policy.password_protection import MAX_TENANT_TERMS

if TYPE_CHECKING:
    import argparse

    from broker.store.protocols import Store


def add_parser(tenant: argparse._SubParsersAction[argparse.ArgumentParser], data_dir: Any) -> None:
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
    banned.add_argument("--json", action="store_true", help="print the terms as JSON")
    data_dir(banned)


def run(args: argparse.Namespace, store: Store) -> int:
    """Change or list a tenant's banned terms; return the exit code.

    Raises:
        NotFound: When there is no such tenant.
        ValueError: When a term is not one the list can hold (one line saying why).
        InvalidRequest: When the list would be too long (nothing changes).
    """
    tenant = args.name
    known_tenant(store, tenant)
    if args.add or args.remove:
        add = [(term, check_term(term)) for term in args.add]
        remove = [check_term(term) for term in args.remove]
        added, removed, total = store.policy.change_banned_terms(
            tenant, add=add, remove=remove, limit=MAX_TENANT_TERMS
        )
        sys.stderr.write(
            f"tenant {tenant}: {added} added, {removed} removed, {total} banned terms"
            " (applies within a second)\n"
        )
        if not args.list and not args.json:
            return 0
    terms = store.policy.banned_terms(tenant)
    if args.json:
        rows = [{"term": term, "normalised": normalised} for term, normalised in terms]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write("".join(f"{term}\n" for term, _ in terms))
    return 0
