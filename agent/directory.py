"""Where the agent asks the directory: find a user, bind as them, say what the directory said.

A sign-in's search and bind run on the event loop (:mod:`agent.ldappool`: the hot path, no
thread hop). Password changes and policy reads are ldap3's, which blocks and is not thread-safe
per connection: each worker thread of a bounded pool keeps its own open connections (one to
search as the service account, one to bind as the user) and reuses them: an operation on an
open connection costs ≈ 0.5 ms, a new connection ≈ 10-50 ms. Any failure to talk to the
directory becomes :class:`DirectoryUnavailable`, raised from the underlying error, and is never
reported as a wrong password.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ldap3
import structlog
from ldap3.core import exceptions as ldap_errors
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.utils.config import set_config_parameter
from ldap3.utils.conv import escape_filter_chars

from agent import ldapwire, lockout, outcomes, ppolicy
from agent.dncache import DnCache
from agent.ldappool import SERVER_EXHAUST_SECONDS, BindPool, SearchPool, tls_context
from pta.errors import DirectoryUnavailable
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from agent.config import DirectoryConfig

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome

#: ldap3's failures to reach or talk to a server (not answers from one).
COMMUNICATION_ERRORS = (
    ldap_errors.LDAPCommunicationError,
    ldap_errors.LDAPServerPoolError,
    ldap_errors.LDAPServerPoolExhaustedError,
    ldap_errors.LDAPResponseTimeoutError,
    ldap_errors.LDAPStartTLSError,
    ldap_errors.LDAPSSLConfigurationError,
    OSError,
)
CONSTRAINT_VIOLATION = 19
#: A password change's answers that say the server could not do it now, not that it refuses:
#: none (-1), operationsError, timeLimitExceeded, adminLimitExceeded, busy, unavailable, other.
TRANSIENT_CHANGE_CODES = frozenset({-1, 1, 3, 11, 51, 52, 80})
#: Bind answers after which a cached DN may be the cause (the user moved or was deleted).
STALE_DN_OUTCOMES = frozenset({Outcome.INVALID_CREDENTIALS, Outcome.UNKNOWN_USER})
#: At most this many ``pwdPolicy`` entries are read when searching the base DN for them.
POLICY_SEARCH_LIMIT = 100
_POLICY_ATTRIBUTES = ("pwdMaxFailure", "pwdLockout")

# ldap3's server pool sleeps this long after every pass over its servers, the last one too
# (10 s by default): a directory that is down would hold each sign-in for 10 s before it is
# answered UNAVAILABLE. One pass, no sleep: the agent answers at once and the next sign-in
# tries again.
set_config_parameter("POOLING_LOOP_TIMEOUT", 0)


#: The password policy request control, encoded once, for every sign-in's bind.
PPOLICY_CONTROL = ldapwire.control(ppolicy.CONTROL_OID)

#: A bind answer after which the user may still change the password.
CHANGEABLE_OUTCOMES = frozenset(
    {Outcome.SUCCESS, Outcome.PASSWORD_MUST_CHANGE, Outcome.PASSWORD_EXPIRED}
)
#: AD's password-change failures, by the first 8 hex digits of the message.
AD_CHANGE_REJECTED = "0000052d"
AD_CHANGE_BAD_OLD = "00000056"


def _change_verdict(result: Mapping[str, Any]) -> Verdict:
    """What a password change's result means for the user.

    A refusal that is neither a wrong old password nor the password policy's (no right to
    write the password, a change the server will not perform) is CHANGE_REFUSED: trying again
    will not help, so the user is not told to, and the operator finds the directory's own
    result code and diagnostic in a warning. Only the codes of a busy or unreachable server
    (and no answer at all) stay DIRECTORY_UNAVAILABLE.
    """
    code = result.get("result", -1)
    if code == 0:
        return Verdict(Outcome.SUCCESS)
    message = str(result.get("message", ""))
    policy = ppolicy.parse_response(result.get("controls"))
    if message[:8].lower() == AD_CHANGE_BAD_OLD or code == outcomes.INVALID_CREDENTIALS_CODE:
        return Verdict(Outcome.INVALID_CREDENTIALS)
    if code == CONSTRAINT_VIOLATION or message[:8].lower() == AD_CHANGE_REJECTED:
        reason = ppolicy.rejection_reason(policy) or message.split(":", 1)[-1].strip()
        return Verdict(Outcome.PASSWORD_REJECTED, reason[:200])
    if code in TRANSIENT_CHANGE_CODES:
        return Verdict(Outcome.DIRECTORY_UNAVAILABLE)
    description = str(result.get("description", "")) or f"result {code}"
    log.warning(
        "password_change.refused_by_directory",
        result_code=code,
        result=description,
        diagnostic=message[:200],
    )
    return Verdict(Outcome.CHANGE_REFUSED, description[:64])


class _PolicyUnreadable(Exception):
    """The directory answered, but not with the policy: the reason is safe to report."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the directory said about one sign-in; ``message`` is safe to show the user."""

    outcome: outcome_pb2.Outcome
    message: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One credential check of a batch: a sign-in, or a password change when ``new_password``."""

    username: str
    password: str = field(repr=False)
    new_password: str = field(default="", repr=False)


class _ThreadConnections:
    """One worker thread's open connections; rebuilt after any communication failure.

    ``user`` binds only for password changes; sign-ins bind on the event loop.
    """

    def __init__(self) -> None:
        self.search: ldap3.Connection | None = None
        self.user: ldap3.Connection | None = None

    def reset(self) -> None:
        for conn in (self.search, self.user):
            if conn is not None:
                # A broken connection may fail to close; it is dropped either way.
                with contextlib.suppress(Exception):
                    conn.unbind()
        self.search = self.user = None


class LdapDirectory:
    """Checks passwords against one directory (a domain's servers)."""

    def __init__(self, config: DirectoryConfig) -> None:
        """Prepare the server pools and the worker threads; connections open lazily."""
        self.config = config
        ca_file = str(config.ca_file) if config.ca_file else None
        # Always verified: without a CA file, against the system's CAs (ldap3's default Tls,
        # which an ldaps:// URL would otherwise get, verifies nothing).
        tls = ldap3.Tls(ca_certs_file=ca_file, validate=ssl.CERT_REQUIRED)
        servers = [
            ldap3.Server(url, get_info=ldap3.NONE, connect_timeout=config.connect_timeout, tls=tls)
            for url in config.urls
        ]
        # active=1: one pass over the servers, then fail (True would retry forever);
        # exhaust: a server that failed is skipped for that long (typeshed says bool: it is not).
        self._pool = ldap3.ServerPool(
            servers,
            ldap3.FIRST,
            active=1,  # type: ignore[arg-type]
            exhaust=SERVER_EXHAUST_SECONDS,  # type: ignore[arg-type]
        )
        self._local = threading.local()
        self._dns = DnCache(ttl=config.dn_cache_ttl, size=config.dn_cache_size)
        self._executor = ThreadPoolExecutor(config.pool_size, thread_name_prefix="ldap")
        settings: dict[str, Any] = {
            "size": config.pool_size,
            "connect_timeout": config.connect_timeout,
            "receive_timeout": config.receive_timeout,
            "tls": tls_context(ca_file),
            "start_tls": config.start_tls,
        }
        self._binds = BindPool(config.urls, **settings)
        service = (config.bind_dn, sasl_prepped(config.bind_password)) if config.bind_dn else None
        self._searches = SearchPool(config.urls, service=service, **settings)

    def close(self) -> None:
        """Stop the worker threads (their connections close with them) and the pools."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._binds.close()
        self._searches.close()

    async def check_all(self, checks: Sequence[Check]) -> list[Verdict | Exception]:
        """Run a batch of checks side by side: each its own bind, none waiting for another.

        Against a directory that takes milliseconds a bind (AD over LDAPS: ≈ 6 ms), or one that
        times out, the checks of a batch must not wait for each other; the bind pool bounds
        how many run at once.

        Returns:
            A verdict per check, in order; or the exception that check raised
            (:class:`DirectoryUnavailable`, or a bug), so that one failure answers one check.
        """
        done = await asyncio.gather(
            *(self._check(check) for check in checks), return_exceptions=True
        )
        verdicts: list[Verdict | Exception] = []
        for answered in done:
            if isinstance(answered, BaseException) and not isinstance(answered, Exception):
                raise answered  # Cancellation: never swallowed.
            verdicts.append(answered)
        return verdicts

    async def _check(self, check: Check) -> Verdict:
        if check.new_password:
            return await self.change_password(check.username, check.password, check.new_password)
        return await self.verify(check.username, check.password)

    async def verify(self, username: str, password: str) -> Verdict:
        """Check ``password`` for ``username`` (``user@domain``).

        The DN comes from the cache, or from a search; both search and bind run on the event
        loop. A failed bind on a cached DN may mean the user moved: they are looked up again,
        and bound again only if the DN changed (the same DN failing twice would count twice
        against the user in the directory).

        Raises:
            DirectoryUnavailable: When no server of the directory answered.
        """
        if not password:  # An empty password is an anonymous bind: it would "succeed".
            return Verdict(Outcome.INVALID_CREDENTIALS)
        login = self.config.login_value(username)
        cached = self._dns.get(login)
        dn = cached or await self._lookup(login)
        if dn is None:
            return Verdict(Outcome.UNKNOWN_USER)
        verdict = await self._sign_in_bind(dn, password)
        if cached is None:
            if verdict.outcome != Outcome.UNKNOWN_USER:
                self._dns.put(login, dn)
            return verdict
        if verdict.outcome not in STALE_DN_OUTCOMES:
            return verdict
        return await self._recheck_moved(login, dn, password, verdict)

    async def _recheck_moved(self, login: str, dn: str, password: str, verdict: Verdict) -> Verdict:
        """After a failed bind on a cached DN: bind again only if the user has moved since."""
        self._dns.forget(login)
        fresh = await self._lookup(login)
        if fresh is None:
            return Verdict(Outcome.UNKNOWN_USER)
        if fresh == dn:
            self._dns.put(login, dn)
            return verdict
        self._dns.put(login, fresh)
        return await self._sign_in_bind(fresh, password)

    async def _sign_in_bind(self, dn: str, password: str) -> Verdict:
        """Bind as ``dn`` with the password policy control, on the event loop.

        The password is sent as ``Connection.bind`` would send it (:func:`sasl_prepped`).
        """
        result = await self._binds.bind(dn, sasl_prepped(password), (PPOLICY_CONTROL,))
        return _verdict(result)

    async def _lookup(self, login: str) -> str | None:
        """Find the login's DN, on the event loop (the service account's search)."""
        config = self.config
        code, dns = await self._searches.find(
            config.base_dn, config.login_attribute, login, size_limit=2
        )
        return self._one_dn(code, dns)

    def _one_dn(self, code: int, dns: Sequence[str]) -> str | None:
        """The DN a login search found; None for none, and for several.

        Raises:
            DirectoryUnavailable: The directory refused the search itself.
        """
        if code not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise DirectoryUnavailable(f"the directory refused the search (result {code})")
        if len(dns) > 1:
            log.warning("directory.ambiguous_login", login_attribute=self.config.login_attribute)
            return None
        return dns[0] if dns else None

    async def change_password(self, username: str, old: str, new: str) -> Verdict:
        """Change ``username``'s password from ``old`` to ``new``, as the user.

        The user binds with the old password first (which also tells a locked or disabled
        account apart), then changes it: on Active Directory by replacing ``unicodePwd``
        (delete the old value, add the new one, over TLS), on OpenLDAP with the Password
        Modify extended operation (RFC 3062) and the password policy control.

        Raises:
            DirectoryUnavailable: When no server of the directory answered.
        """
        if not old or not new:
            return Verdict(Outcome.INVALID_CREDENTIALS)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._change, username, old, new)

    async def lockout_policy(self) -> lockout.LockoutPolicy:
        """Read after how many wrong passwords this directory locks an account.

        Runs on the sign-in worker threads, over their search connection (the service
        account, or anonymous); what is read where is in :mod:`agent.lockout`. Never raises
        for the directory's sake: a failure is a policy with ``known`` false saying why.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._lockout_policy)

    def _lockout_policy(self) -> lockout.LockoutPolicy:
        policy = self._read_lockout(self._connections())
        if not policy.known:
            log.info("directory.lockout_unknown", base_dn=self.config.base_dn, reason=policy.source)
        return policy

    def _read_lockout(self, conns: _ThreadConnections) -> lockout.LockoutPolicy:
        retry = conns.search is not None  # The server may have closed an idle connection.
        while True:
            try:
                search = self._searcher(conns)
                if self.config.kind == "ad":
                    return self._ad_lockout(search)
                return self._ppolicy_lockout(search)
            except COMMUNICATION_ERRORS as error:
                conns.reset()
                if not retry:
                    return lockout.unknown(f"could not read: {str(error)[:160]}")
                retry = False
            except _PolicyUnreadable as error:
                return lockout.unknown(str(error))
            except ldap_errors.LDAPException as error:
                return lockout.unknown(f"could not read: LDAP error {type(error).__name__}")

    def _ad_lockout(self, conn: ldap3.Connection) -> lockout.LockoutPolicy:
        root = _entries(conn, "", "(objectClass=*)", ["defaultNamingContext"])
        naming = root[0][1].get("defaultnamingcontext", []) if root else []
        if not naming:
            raise _PolicyUnreadable("the rootDSE names no defaultNamingContext")
        domain = _entries(conn, naming[0], "(objectClass=*)", ["lockoutThreshold"])
        return lockout.from_ad(
            naming[0], domain[0][1].get("lockoutthreshold", []) if domain else []
        )

    def _ppolicy_lockout(self, conn: ldap3.Connection) -> lockout.LockoutPolicy:
        if dn := self.config.password_policy_dn:
            entries = _entries(conn, dn, "(objectClass=pwdPolicy)", _POLICY_ATTRIBUTES)
            return lockout.from_ppolicy(entries, f"at {dn}")
        base = self.config.base_dn
        entries = _entries(conn, base, "(objectClass=pwdPolicy)", _POLICY_ATTRIBUTES, subtree=True)
        return lockout.from_ppolicy(entries, f"under {base}")

    def _change(self, username: str, old: str, new: str) -> Verdict:
        conns = self._connections()
        try:
            return self._change_on(conns, username, old, new)
        except COMMUNICATION_ERRORS as error:
            conns.reset()
            raise DirectoryUnavailable("the directory did not answer") from error

    def _change_on(self, conns: _ThreadConnections, username: str, old: str, new: str) -> Verdict:
        login = self.config.login_value(username)
        dn = self._find(conns, login)
        if dn is None:
            return Verdict(Outcome.UNKNOWN_USER)
        bound = self._bind(conns, dn, old)
        # Must-change and expired passwords are what a change is for; any other failure stands.
        if bound.outcome not in CHANGEABLE_OUTCOMES:
            return bound
        user = conns.user
        if user is None or not user.bound:
            # The directory refused the bind itself (AD's 773/532): change over a fresh
            # service-account session, the old password proving the user.
            return bound if self.config.kind != "ad" else self._ad_change(conns, dn, old, new)
        if self.config.kind == "ad":
            return self._ad_change(conns, dn, old, new, conn=user)
        user.extend.standard.modify_password(
            user=dn, old_password=old, new_password=new, controls=[ppolicy.request_control()]
        )
        result = user.result or {}
        return _change_verdict(result)

    def _ad_change(
        self,
        conns: _ThreadConnections,
        dn: str,
        old: str,
        new: str,
        conn: ldap3.Connection | None = None,
    ) -> Verdict:
        target = conn or conns.search
        if target is None:
            raise ldap_errors.LDAPCommunicationError("no connection to change the password on")
        target.extend.microsoft.modify_password(dn, new, old)
        return _change_verdict(target.result or {})

    def _connections(self) -> _ThreadConnections:
        conns: _ThreadConnections | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = _ThreadConnections()
        return conns

    def open_connection(
        self, user: str | None, password: str | None, *, simple: bool
    ) -> ldap3.Connection:
        """An ldap3 connection to the first server that answers, opened (StartTLS done), unbound.

        Raises:
            LDAPException, OSError: When no server answered (see ``COMMUNICATION_ERRORS``).
        """
        conn = ldap3.Connection(
            self._pool,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if simple else ldap3.ANONYMOUS,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds.
            receive_timeout=max(1, math.ceil(self.config.receive_timeout)),
            raise_exceptions=False,
            # Not read-only: a password change on AD is a modify of unicodePwd.
        )
        conn.open(read_server_info=False)
        if conn.socket is not None:
            conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.config.start_tls and not conn.start_tls(read_server_info=False):
            raise ldap_errors.LDAPStartTLSError("StartTLS was refused")
        return conn

    def _bind(self, conns: _ThreadConnections, dn: str, password: str) -> Verdict:
        """Bind as ``dn`` through ldap3 on the thread's user connection, for a password change.

        The change then relies on that connection's state (``bound``); sign-ins bind on the
        event loop instead (:meth:`_sign_in_bind`).
        """
        if conns.user is None:
            conns.user = self.open_connection(None, None, simple=True)
        user = conns.user
        user.user, user.password = dn, password
        try:
            user.bind(read_server_info=False, controls=[ppolicy.request_control()])
        finally:
            user.password = None
        return _verdict(user.result or {})

    def _searcher(self, conns: _ThreadConnections) -> ldap3.Connection:
        """The thread's search connection (service account or anonymous), bound."""
        if conns.search is None:
            config = self.config
            conns.search = self.open_connection(
                config.bind_dn or None, config.bind_password or None, simple=bool(config.bind_dn)
            )
            if not conns.search.bind(read_server_info=False):
                description = (conns.search.result or {}).get("description", "no answer")
                conns.reset()
                raise ldap_errors.LDAPCommunicationError(f"service bind failed: {description}")
        return conns.search

    def _find(self, conns: _ThreadConnections, login: str) -> str | None:
        """As :meth:`_lookup`, through ldap3 on the thread's search connection."""
        search = self._searcher(conns)
        search_filter = f"({self.config.login_attribute}={escape_filter_chars(login)})"
        search.search(
            self.config.base_dn,
            search_filter,
            ldap3.SUBTREE,
            attributes=[],
            size_limit=2,
        )
        entries = [e for e in search.response or [] if e.get("type") == "searchResEntry"]
        return self._one_dn(
            (search.result or {}).get("result", -1), [str(e["dn"]) for e in entries]
        )


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


def sasl_prepped(password: str) -> bytes:
    """The password's bytes after SASLprep (RFC 4013), as ldap3 prepares a simple bind's.

    Printable ASCII is its own SASLprep (nothing to map, NFKC leaves it alone, nothing in it
    is prohibited or bidirectional) and most passwords are just that: they skip ldap3's
    character-by-character table checks (≈ 30 µs a sign-in). A test holds the two equal.

    Raises:
        LDAPException: For a password SASLprep refuses (ldap3's error, as before).
    """
    if password.isascii() and password.isprintable():
        return password.encode("ascii")
    prepared: bytes = validate_simple_password(password)
    return prepared


def _verdict(result: Mapping[str, Any]) -> Verdict:
    """What a bind's result means for the user.

    The password policy control decides first: OpenLDAP says "expired", "locked" or "must
    change" only in the response control (must-change even on a successful bind); AD ignores
    the control (it is not critical) and answers with its data subcodes instead.
    """
    code = result.get("result", -1)
    policy = ppolicy.parse_response(result.get("controls"))
    decided = ppolicy.outcome(code, policy)
    if decided is None:
        decided = outcomes.from_bind(code, result.get("message", ""))
    return Verdict(decided, ppolicy.warning_message(policy))
