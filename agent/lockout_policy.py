"""Reading a directory's own lockout policy, over the worker threads' search connection.

What is read where, and what the numbers mean, is in :mod:`agent.lockout` (which turns what
is read here into a :class:`~agent.lockout.LockoutPolicy` and reports it). Never raises for
the directory's sake: a failure is a policy with ``known`` false saying why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ldap3
import structlog
from ldap3.core import exceptions as ldap_errors

from agent import lockout
from agent.ldap_threads import COMMUNICATION_ERRORS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.ldap_threads import ThreadConnections, ThreadedLdap

log = structlog.get_logger()
#: At most this many ``pwdPolicy`` entries are read when searching the base DN for them.
POLICY_SEARCH_LIMIT = 100
_POLICY_ATTRIBUTES = ("pwdMaxFailure", "pwdLockout")


class _PolicyUnreadable(Exception):
    """The directory answered, but not with the policy: the reason is safe to report."""


async def read(threads: ThreadedLdap) -> lockout.LockoutPolicy:
    """After how many wrong passwords this directory locks an account (on a worker thread)."""
    return await threads.run(_read, threads)


def _read(threads: ThreadedLdap) -> lockout.LockoutPolicy:
    policy = _read_on(threads, threads.connections())
    if not policy.known:
        log.info("directory.lockout_unknown", base_dn=threads.config.base_dn, reason=policy.source)
    return policy


def _read_on(threads: ThreadedLdap, conns: ThreadConnections) -> lockout.LockoutPolicy:
    retry = conns.search is not None  # The server may have closed an idle connection.
    while True:
        try:
            search = threads.searcher(conns)
            if threads.config.kind == "ad":
                return _ad_lockout(search)
            return _ppolicy_lockout(threads, search)
        except COMMUNICATION_ERRORS as error:
            conns.reset()
            if not retry:
                return lockout.unknown(f"could not read: {str(error)[:160]}")
            retry = False
        except _PolicyUnreadable as error:
            return lockout.unknown(str(error))
        except ldap_errors.LDAPException as error:
            return lockout.unknown(f"could not read: LDAP error {type(error).__name__}")


def _ad_lockout(conn: ldap3.Connection) -> lockout.LockoutPolicy:
    root = _entries(conn, "", "(objectClass=*)", ["defaultNamingContext"])
    naming = root[0][1].get("defaultnamingcontext", []) if root else []
    if not naming:
        raise _PolicyUnreadable("the rootDSE names no defaultNamingContext")
    domain = _entries(conn, naming[0], "(objectClass=*)", ["lockoutThreshold"])
    return lockout.from_ad(naming[0], domain[0][1].get("lockoutthreshold", []) if domain else [])


def _ppolicy_lockout(threads: ThreadedLdap, conn: ldap3.Connection) -> lockout.LockoutPolicy:
    if dn := threads.config.password_policy_dn:
        entries = _entries(conn, dn, "(objectClass=pwdPolicy)", _POLICY_ATTRIBUTES)
        return lockout.from_ppolicy(entries, f"at {dn}")
    base = threads.config.base_dn
    entries = _entries(conn, base, "(objectClass=pwdPolicy)", _POLICY_ATTRIBUTES, subtree=True)
    return lockout.from_ppolicy(entries, f"under {base}")


def _entries(
    conn: ldap3.Connection,
    base: str,
    search_filter: str,
    attributes: Sequence[str],
    *,
    subtree: bool = False,
) -> list[lockout.Entry]:
    """Search for a policy: the entries found, attribute names lower-cased, values as text.

    Raises:
        _PolicyUnreadable: When the directory refused (no such entry, no rights).
    """
    conn.search(
        base,
        search_filter,
        ldap3.SUBTREE if subtree else ldap3.BASE,
        attributes=list(attributes),
        size_limit=POLICY_SEARCH_LIMIT,
    )
    result = conn.result or {}
    if result.get("result", -1) not in (0, 4):  # success, sizeLimitExceeded (some entries)
        reason = result.get("description") or result.get("result")
        raise _PolicyUnreadable(f"{reason} reading {base or 'the rootDSE'}")
    return [
        (
            str(entry["dn"]),
            {
                name.lower(): [bytes(v).decode(errors="replace") for v in values]
                for name, values in (entry.get("raw_attributes") or {}).items()
            },
        )
        for entry in conn.response or []
        if entry.get("type") == "searchResEntry"
    ]
