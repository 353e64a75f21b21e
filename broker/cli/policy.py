"""``pta-broker`` commands for the sign-in policy: tenant policy and show, lockout, mfa.

They write the same store the serving broker reads, which applies a change (a new policy, an
unlock, a new authenticator) within a quarter of a second.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.admin.users import DEFAULT_MFA_ISSUER
from broker.cli import render
from broker.cli.backend import Usage, ask
from broker.policy import mfa
from broker.policy.tenant_policy import MFA_MODES
from pta.v1 import admin_pb2

if TYPE_CHECKING:
    import argparse

    from broker.cli.backend import Backend


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    """Add ``serve``'s token and MFA flags."""
    serve.add_argument("--token-issuer", help="the iss claim of tokens (default pta-broker)")
    serve.add_argument("--token-audience", help="the aud claim of tokens (default: none)")
    serve.add_argument("--token-ttl", help="token lifetime (default 1h)")
    serve.add_argument(
        "--signing-key-lifetime", help="how long a token signing key signs (default 30d)"
    )
    serve.add_argument(
        "--mfa-key-file", help="key sealing TOTP secrets (or PTA_BROKER_MFA_KEY[_FILE])"
    )
    serve.add_argument("--mfa-challenge-ttl", help="time to enter the code (default 2m)")


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    tenant: argparse._SubParsersAction[argparse.ArgumentParser],
    managed: Any,
) -> None:
    """Add ``tenant policy``, ``tenant show``, ``lockout …`` and ``mfa …`` to the CLI."""
    policy = tenant.add_parser("policy", help="set a tenant's lockout and MFA policy")
    policy.add_argument("name")
    policy.add_argument("--lockout-threshold", type=int, help="wrong passwords (0: off)")
    policy.add_argument("--lockout-duration", help="first lockout, doubling after (e.g. 60s)")
    policy.add_argument("--lockout-max", help="longest lockout (e.g. 1h)")
    policy.add_argument(
        "--familiar-network", action="append", help="CIDR always familiar (repeatable)"
    )
    policy.add_argument(
        "--no-familiar-networks", action="store_true", help="forget the configured networks"
    )
    policy.add_argument("--familiar-window", help="how long a network stays familiar (30d)")
    policy.add_argument("--mfa", choices=MFA_MODES, help="when a second factor is required")
    managed(policy)
    show = tenant.add_parser("show", help="a tenant's domains, policy, directories, lockouts")
    show.add_argument("name")
    managed(show)

    lock = commands.add_parser("lockout", help="see and clear lockouts").add_subparsers(
        dest="action", required=True
    )
    llist = lock.add_parser("list", help="users with failures counted")
    llist.add_argument("--tenant", required=True)
    managed(llist)
    clear = lock.add_parser("clear", help="unlock a user (or --all of a tenant's)")
    clear.add_argument("--tenant", required=True)
    clear.add_argument("user", nargs="?", help="user@domain")
    clear.add_argument("--all", action="store_true")
    managed(clear)

    factor = commands.add_parser("mfa", help="TOTP authenticators").add_subparsers(
        dest="action", required=True
    )
    keygen = factor.add_parser("keygen", help="write a new MFA key file (0600)")
    keygen.add_argument("file", type=Path)
    enroll = factor.add_parser("enroll", help="give a user a TOTP authenticator")
    enroll.add_argument("--tenant", required=True)
    enroll.add_argument("user", help="user@domain")
    enroll.add_argument("--mfa-key-file", help="the key that seals secrets")
    enroll.add_argument("--issuer", default=DEFAULT_MFA_ISSUER, help="name shown in the app")
    enroll.add_argument("--no-qr", action="store_true", help="print the URI only")
    enroll.add_argument(
        "--replace", action="store_true", help="replace an authenticator already enrolled"
    )
    managed(enroll)
    remove = factor.add_parser("remove", help="remove a user's authenticator")
    remove.add_argument("--tenant", required=True)
    remove.add_argument("user", help="user@domain")
    managed(remove)
    mlist = factor.add_parser("list", help="users with an authenticator")
    mlist.add_argument("--tenant", required=True)
    managed(mlist)


def run(args: argparse.Namespace, backend: Backend) -> int:
    """Run one of this module's commands; return the exit code."""
    if args.command == "tenant":
        return _show(args, backend) if args.action == "show" else _set_policy(args, backend)
    if args.command == "lockout":
        return _lockout(args, backend)
    return _mfa(args, backend)


def keygen(path: Path) -> int:
    """Write a new MFA key, readable by its owner only; never overwrite one."""
    if path.exists():
        sys.stderr.write(f"pta-broker: {path} exists: an MFA key is never overwritten\n")
        return 1
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(mfa.generate_key() + "\n")
    sys.stdout.write(f"wrote {path}: serve with --mfa-key-file {path}; keep a copy safe\n")
    return 0


def _set_policy(args: argparse.Namespace, backend: Backend) -> int:
    request = admin_pb2.SetTenantPolicyRequest(
        name=args.name,
        familiar_networks=args.familiar_network or [],
        no_familiar_networks=args.no_familiar_networks,
    )
    if args.lockout_threshold is not None:
        request.lockout_threshold = args.lockout_threshold
    for flag, value in (
        ("lockout_duration", args.lockout_duration),
        ("lockout_max", args.lockout_max),
        ("familiar_window", args.familiar_window),
        ("mfa", args.mfa),
    ):
        if value:
            setattr(request, flag, value)
    answer = ask(backend, request, admin_pb2.SetTenantPolicyResponse)
    render.write_json(render.as_dict(answer.policy))  # The policy is JSON with or without --json.
    for warning in answer.warnings:
        render.note(f"pta-broker: WARNING: {warning}")
    return 0


def _show(args: argparse.Namespace, backend: Backend) -> int:
    shown = ask(backend, admin_pb2.ShowTenantRequest(name=args.name), admin_pb2.TenantDetails)
    render.show(args, shown, lambda: render.tenant_shown(shown))
    return 0


def _lockout(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "clear":
        if bool(args.user) == bool(args.all):
            raise Usage("name one user, or --all")
        request = admin_pb2.ClearLockoutsRequest(
            tenant=args.tenant, user=args.user or "", all=args.all
        )
        cleared = ask(backend, request, admin_pb2.ClearLockoutsResponse)
        render.show(args, cleared, f"cleared {cleared.cleared} counter(s): applies within a second")
        return 0
    listed = ask(
        backend, admin_pb2.ListLockoutsRequest(tenant=args.tenant), admin_pb2.ListLockoutsResponse
    )
    render.show(args, listed, lambda: render.lockouts_listed(listed), field="lockouts")
    return 0


def _mfa(args: argparse.Namespace, backend: Backend) -> int:
    if args.action == "list":
        listed = ask(
            backend, admin_pb2.ListMfaRequest(tenant=args.tenant), admin_pb2.ListMfaResponse
        )
        render.show(args, listed, "\n".join(r.user for r in listed.users), field="users")
        return 0
    if args.action == "remove":
        removed = ask(
            backend,
            admin_pb2.RemoveMfaRequest(tenant=args.tenant, user=args.user),
            admin_pb2.RemoveMfaResponse,
        )
        render.show(args, removed, f"removed the authenticator of {removed.user}")
        return 0
    request = admin_pb2.EnrolMfaRequest(
        tenant=args.tenant, user=args.user, issuer=args.issuer, replace=args.replace
    )
    render.enrolled(ask(backend, request, admin_pb2.EnrolMfaResponse), args)
    return 0
