"""``pta-broker`` commands for the sign-in policy: tenant policy and show, lockout, mfa.

They write the same store the serving broker reads, which applies a change (a new policy, an
unlock, a new authenticator) within a quarter of a second.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import segno

from broker.config import mfa_key_file
from broker.policy import lockout, mfa
from broker.policy.accounts import AccountMap, typed_key
from broker.policy.signin_policy import threshold_warning
from broker.policy.tenant_policy import MFA_MODES
from broker.store.records import STATUS_FRESHNESS
from pta.config import parse_duration
from pta.errors import InvalidRequest, NotFound
from pta.names import parse_upn

if TYPE_CHECKING:
    import argparse

    from broker.store.protocols import Store

DEFAULT_MFA_ISSUER = "pta"


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
    data_dir: Any,
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
    data_dir(policy)
    show = tenant.add_parser("show", help="a tenant's domains, policy, directories, lockouts")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    data_dir(show)

    lock = commands.add_parser("lockout", help="see and clear lockouts").add_subparsers(
        dest="action", required=True
    )
    llist = lock.add_parser("list", help="users with failures counted")
    llist.add_argument("--tenant", required=True)
    llist.add_argument("--json", action="store_true")
    data_dir(llist)
    clear = lock.add_parser("clear", help="unlock a user (or --all of a tenant's)")
    clear.add_argument("--tenant", required=True)
    clear.add_argument("user", nargs="?", help="user@domain")
    clear.add_argument("--all", action="store_true")
    data_dir(clear)

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
    data_dir(enroll)
    remove = factor.add_parser("remove", help="remove a user's authenticator")
    remove.add_argument("--tenant", required=True)
    remove.add_argument("user", help="user@domain")
    data_dir(remove)
    mlist = factor.add_parser("list", help="users with an authenticator")
    mlist.add_argument("--tenant", required=True)
    mlist.add_argument("--json", action="store_true")
    data_dir(mlist)


def run(args: argparse.Namespace, store: Store) -> int:
    """Run one of this module's commands; return the exit code."""
    if args.command == "tenant":
        return _show(args, store) if args.action == "show" else _set_policy(args, store)
    if args.command == "lockout":
        return _lockout(args, store)
    return _mfa(args, store)


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


def _user(store: Store, tenant: str, text: str) -> list[str]:
    """The keys a user's state may be under: the account's first (see AccountMap.keys).

    The serving broker keys a user as its agents said their directory names accounts; the
    store holds what they said, so this process keys users as the broker does.
    """
    upn = parse_upn(text)
    if store.tenant_for_domain(upn.domain) != tenant:
        raise InvalidRequest(f"{upn.domain} is not a domain of tenant {tenant}")
    return AccountMap(store.policy).keys(tenant, typed_key(upn))


def known_tenant(store: Store, tenant: str) -> None:
    """Raise :class:`NotFound` unless ``tenant`` exists (one sentence for every command)."""
    if tenant not in store.tenants():
        raise NotFound(f"no tenant {tenant!r}")


def _set_policy(args: argparse.Namespace, store: Store) -> int:
    known_tenant(store, args.name)
    changes: dict[str, Any] = {}
    if args.lockout_threshold is not None:
        changes["lockout_threshold"] = args.lockout_threshold
    if args.lockout_duration:
        changes["lockout_duration"] = parse_duration(args.lockout_duration)
    if args.lockout_max:
        changes["lockout_max_duration"] = parse_duration(args.lockout_max)
    if args.no_familiar_networks:
        changes["familiar_networks"] = ()
    if args.familiar_network:
        kept = (
            ()
            if args.no_familiar_networks
            else store.policy.tenant_policy(args.name).familiar_networks
        )
        changes["familiar_networks"] = (*kept, *args.familiar_network)
    if args.familiar_window:
        changes["familiar_window"] = parse_duration(args.familiar_window)
    if args.mfa:
        changes["mfa"] = args.mfa
    policy = store.policy.tenant_policy(args.name).updated(**changes)
    store.policy.set_tenant_policy(args.name, policy)
    sys.stdout.write(json.dumps(policy.describe(), indent=2) + "\n")
    serving = store.status(fresh_within=STATUS_FRESHNESS)
    keyless = sorted(b for b, said in serving.items() if said.get("mfa_key") == "no")
    if policy.mfa != "never" and keyless:
        sys.stderr.write(
            f"pta-broker: WARNING: {_brokers(keyless, len(serving))} no MFA key: sign-ins"
            " that need a second factor are answered UNAVAILABLE there until restarted with"
            " --mfa-key-file (make one with `pta-broker mfa keygen FILE`)\n"
        )
    return 0


def _brokers(ids: list[str], serving: int) -> str:
    """Who a warning is about: the one broker, or which of the several brokers."""
    if serving == 1:
        return "the broker serving this store has"
    return f"{len(ids)} of the {serving} brokers serving this store ({', '.join(ids)}) have"


def _guards(store: Store, tenant: str, now: float) -> dict[str, dict[str, Any]]:
    """Per account with wrong passwords in the directory's count: what the guard does now.

    The same arithmetic as the serving broker's (:func:`broker.policy.lockout.directory_budget`):
    it refuses once the count reaches the bound, from unfamiliar places one sooner, until the
    count is forgotten (a success through pta, ``lockout clear``, or a quiet day).
    """
    rule = store.policy.tenant_policy(tenant).lockout
    said: dict[str, list[int]] = {}
    for report in store.directory_policies(tenant):
        if report.known:
            said.setdefault(report.domain, []).append(report.lockout_threshold)
    accounts = AccountMap(store.policy)
    guards: dict[str, dict[str, Any]] = {}
    for (owner, user, kind), counter in store.policy.counters().items():
        if owner != tenant or kind != "directory" or not rule.enabled:
            continue
        sent = lockout.current(counter, rule, now)
        domains = accounts.domains(tenant, user)
        threshold = lockout.lowest_threshold(t for d in domains for t in said.get(d, []))
        refuses = [
            where
            for where, unfamiliar in (("everywhere", False), ("from unfamiliar places", True))
            if (budget := lockout.directory_budget(threshold, unfamiliar=unfamiliar)) is not None
            and sent.failures >= budget
        ]
        guards[user] = {
            "sent_to_directory": sent.failures,
            "directory_locks_at": threshold,
            "refuses": refuses[0] if refuses else "",
            "until": _iso(sent.last_failure + rule.forget_after) if refuses else "",
        }
    return guards


def _show(args: argparse.Namespace, store: Store) -> int:
    tenant = args.name
    known_tenant(store, tenant)
    policy = store.policy.tenant_policy(tenant)
    threshold = policy.lockout.threshold
    directories = [
        {
            "domain": d.domain,
            "agent_id": d.agent_id,
            "known": d.known,
            "lockout_threshold": d.lockout_threshold,
            "source": d.source,
            "reported_at": _iso(d.reported_at),
            "warning": threshold_warning(threshold, d.lockout_threshold) if d.known else "",
        }
        for d in store.directory_policies(tenant)
    ]
    now = time.time()
    counters = [(k, c) for k, c in store.policy.counters().items() if k[0] == tenant]
    shown = {
        "tenant": tenant,
        "domains": store.tenants()[tenant],
        "policy": policy.describe(),
        "directories": directories,
        "locked_users": sorted({k[1] for k, c in counters if c.locked_until > now}),
        # Held back by the directory guard: one more would lock them in the directory.
        "guarded_users": {
            user: {"refuses": g["refuses"], "until": g["until"]}
            for user, g in sorted(_guards(store, tenant, now).items())
            if g["refuses"]
        },
        "users_with_failures": len({k[1] for k, _ in counters}),
        "mfa_users": len(store.policy.mfa_users(tenant)),
        "banned_terms": len(store.policy.banned_terms(tenant)),
    }
    if args.json:
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return 0
    out = [f"tenant {tenant}: {' '.join(shown['domains'])}"]
    out += [f"  {name}: {value}" for name, value in policy.describe().items()]
    for d in directories:
        said = d["lockout_threshold"] if d["known"] else "unknown"
        out.append(f"  directory {d['domain']} (agent {d['agent_id']}): locks after {said}")
        if d["warning"]:
            out.append(f"    WARNING: {d['warning']}")
    out.append(f"  locked now: {', '.join(shown['locked_users']) or 'nobody'}")
    guarded = [
        f"{user} ({g['refuses']}, until {g['until']})" for user, g in shown["guarded_users"].items()
    ]
    out.append(
        "  held back by the directory guard (one more would lock them on premises): "
        + (", ".join(guarded) or "nobody")
    )
    out.append(f"  users with failures counted: {shown['users_with_failures']}")
    out.append(f"  users with an authenticator: {shown['mfa_users']}")
    out.append(f"  own banned password terms: {shown['banned_terms']} (tenant banned-passwords)")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _lockout(args: argparse.Namespace, store: Store) -> int:
    known_tenant(store, args.tenant)
    if args.action == "clear":
        if bool(args.user) == bool(args.all):
            sys.stderr.write("pta-broker: name one user, or --all\n")
            return 2
        if args.all:
            cleared = store.policy.clear_counters(args.tenant)
        else:
            keys = _user(store, args.tenant, args.user)
            cleared = sum(store.policy.clear_counters(args.tenant, key) for key in keys)
        sys.stdout.write(f"cleared {cleared} counter(s): applies within a second\n")
        return 0
    now = time.time()
    guards = _guards(store, args.tenant, now)
    rows: list[dict[str, Any]] = [
        {
            "user": user,
            "location": location,
            "failures": c.failures,
            "lockouts": c.lockouts,
            "locked_for_seconds": max(0, round(c.locked_until - now)),
            "last_failure": _iso(c.last_failure),
            **({"guard": guards[user]} if location == "directory" and user in guards else {}),
        }
        for (tenant, user, location), c in sorted(store.policy.counters().items())
        if tenant == args.tenant
    ]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for row in rows:
        line = f"{row['user']}\t{row['location']}\tfailures {row['failures']}"
        if guard := row.get("guard"):
            locks = guard["directory_locks_at"] or "unknown"
            line += f"\tsent to the directory, which locks at {locks}"
            if guard["refuses"]:
                line += f"\tguard refuses {guard['refuses']} until {guard['until']}"
        else:
            line += f"\tlocked for {row['locked_for_seconds']} s"
        sys.stdout.write(line + "\n")
    return 0


def _mfa(args: argparse.Namespace, store: Store) -> int:
    known_tenant(store, args.tenant)
    if args.action == "list":
        rows = [
            {"user": user, "enrolled_at": _iso(at)}
            for user, at in store.policy.mfa_users(args.tenant)
        ]
        text = json.dumps(rows, indent=2) if args.json else "\n".join(r["user"] for r in rows)
        sys.stdout.write(text + "\n" if text else "")
        return 0
    keys = _user(store, args.tenant, args.user)
    user = keys[0]
    if args.action == "remove":
        # Every key the account's authenticator may be under: none must be left to find.
        if not sum(store.policy.remove_mfa(args.tenant, key) for key in keys):
            sys.stderr.write(f"pta-broker: {user} has no authenticator\n")
            return 1
        sys.stdout.write(f"removed the authenticator of {user}\n")
        return 0
    if not args.replace and any(store.policy.mfa(args.tenant, k) for k in keys):
        sys.stderr.write(
            f"pta-broker: {user} already has an authenticator: --replace enrols a new one"
            " (the old one stops working at once)\n"
        )
        return 1
    key = mfa.MfaKey.load(
        mfa_key_file(vars(args), os.environ), os.environ.get("PTA_BROKER_MFA_KEY", "")
    )
    if key is None:
        sys.stderr.write(
            "pta-broker: no MFA key: --mfa-key-file (or PTA_BROKER_MFA_KEY_FILE /"
            " PTA_BROKER_MFA_KEY); make one with `pta-broker mfa keygen FILE`\n"
        )
        return 2
    secret = mfa.new_secret()
    store.policy.enrol_mfa(args.tenant, user, key.seal(secret, args.tenant, user), time.time())
    for older in keys[1:]:  # One enrolled under a typed name before would be found second.
        store.policy.remove_mfa(args.tenant, older)
    uri = mfa.provisioning_uri(secret, typed_key(parse_upn(args.user)), args.issuer)
    del secret
    sys.stdout.write(f"{uri}\n")
    if not args.no_qr and sys.stdout.isatty():
        segno.make(uri, error="m").terminal(compact=True)
    sys.stderr.write(
        f"enrolled {user}: scan the code (or the URI) into an authenticator app; it is shown once\n"
    )
    return 0


def _iso(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")
