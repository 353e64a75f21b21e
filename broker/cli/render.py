"""What a management command prints, made from the method's answer alone.

Local and remote commands get the same answer messages (:mod:`broker.cli.backend`), so they
print the same: ``--json`` the answer's fields under their contract names, otherwise lines for
a terminal (tab-separated where they list). Secrets an answer carries (an enrolment token, an
authenticator's URI) go to stdout only, where the operator asked for them.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import segno

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from google.protobuf.message import Message

    from pta.v1 import admin_pb2


def as_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready Python values, every field under its contract name.

    Unlike ``json_format.MessageToDict``, 64-bit integers stay numbers, an unset optional
    scalar is None and an unset message is left out: what operators' scripts read before.
    """
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            out[field.name] = {k: _value(v) for k, v in sorted(value.items())}
        elif field.is_repeated:
            out[field.name] = [_value(v) for v in value]
        elif field.has_presence and not message.HasField(field.name):
            if entry is None:
                out[field.name] = None
        else:
            out[field.name] = _value(value)
    return out


def _value(value: Any) -> Any:
    return as_dict(value) if hasattr(value, "DESCRIPTOR") else value


def show(
    args: argparse.Namespace,
    answer: Message,
    text: str | Callable[[], None],
    *,
    field: str = "",
) -> None:
    """Print an answer: as JSON with ``--json``, else ``text`` (a line, or what it prints).

    A listing's JSON is its rows only (``field``), as scripts have read it since before the
    AdminService.
    """
    if args.json:
        shown = as_dict(answer)
        write_json(shown[field] if field else shown)
    elif callable(text):
        text()
    else:
        say(text)


def write_json(value: object) -> None:
    """Print ``value`` as indented JSON."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def say(text: str) -> None:
    """Print a line to stdout."""
    sys.stdout.write(text + "\n")


def note(text: str) -> None:
    """Print a line to stderr: what the operator should read, not what a script parses."""
    sys.stderr.write(text + "\n")


def tenant_shown(answer: admin_pb2.TenantDetails) -> None:
    """``tenant show``: domains, policy, what directories said, who is locked or held back."""
    shown = as_dict(answer)
    out = [f"tenant {answer.tenant}: {' '.join(answer.domains)}"]
    out += [f"  {name}: {value}" for name, value in sorted(shown["policy"].items())]
    for d in answer.directories:
        said = d.lockout_threshold if d.known else "unknown"
        out.append(f"  directory {d.domain} (agent {d.agent_id}): locks after {said}")
        if d.warning:
            out.append(f"    WARNING: {d.warning}")
    out.append(f"  locked now: {', '.join(answer.locked_users) or 'nobody'}")
    guarded = [f"{user} ({g.refuses}, until {g.until})" for user, g in answer.guarded_users.items()]
    out.append(
        "  held back by the directory guard (one more would lock them on premises): "
        + (", ".join(sorted(guarded)) or "nobody")
    )
    out.append(f"  users with failures counted: {answer.users_with_failures}")
    out.append(f"  users with an authenticator: {answer.mfa_users}")
    out.append(f"  own banned password terms: {answer.banned_terms} (tenant banned-passwords)")
    say("\n".join(out))


def agents_listed(answer: admin_pb2.ListAgentsResponse) -> None:
    """``agents list``: one line per agent."""
    for a in answer.agents:
        state = "revoked" if a.revoked else "connected" if a.connected else "offline"
        certs = ", ".join(f"{c.serial} until {c.not_after}" for c in a.certificates)
        say(
            f"{a.id}\t{a.tenant}\t{state}\t{' '.join(a.domains) or '-'}"
            f"\tcertificates {certs or 'none usable'}\tin flight {a.in_flight}"
            f"\tbrokers {' '.join(a.brokers) or '-'}{_health(a)}"
        )


def _health(a: admin_pb2.AgentInfo) -> str:
    """What a connected agent said of itself: its checks, and each directory server."""
    if not a.HasField("checks"):
        return ""
    c = a.checks
    said = f"\tchecks {c.handled} ({c.failed} failed, {c.errors} errors)"
    for s in a.directories:
        if s.reachable:
            said += f"\t{s.server} up {s.median_bind_ms:.1f} ms"
        elif s.last_error:
            said += f"\t{s.server} down: {s.last_error}"
        else:
            said += f"\t{s.server} not used yet"
    return said


def tokens_listed(answer: admin_pb2.ListTokensResponse) -> None:
    """``token list``: id, tenant, state."""
    for t in answer.tokens:
        say(f"{t.id}\t{t.tenant}\t{'used' if t.used else 'expired' if t.expired else 'valid'}")


def lockouts_listed(answer: admin_pb2.ListLockoutsResponse) -> None:
    """``lockout list``: one line per user and where the failures were counted."""
    for row in answer.lockouts:
        line = f"{row.user}\t{row.location}\tfailures {row.failures}"
        if row.HasField("guard"):
            guard = row.guard
            locks = guard.directory_locks_at or "unknown"
            line += f"\tsent to the directory, which locks at {locks}"
            if guard.refuses:
                line += f"\tguard refuses {guard.refuses} until {guard.until}"
        else:
            line += f"\tlocked for {row.locked_for_seconds} s"
        say(line)


def enrolled(answer: admin_pb2.EnrolMfaResponse, args: argparse.Namespace) -> None:
    """``mfa enroll``: the URI (a QR code too on a terminal), shown this once."""
    if args.json:
        write_json(as_dict(answer))
        return
    say(answer.uri)
    if not args.no_qr and sys.stdout.isatty():
        segno.make(answer.uri, error="m").terminal(compact=True)
    note(
        f"enrolled {answer.user}: scan the code (or the URI) into an authenticator app;"
        " it is shown once"
    )
