"""The only module that speaks LDAP: find a user, bind as them, say what the directory said.

ldap3 is blocking and not thread-safe per connection, so each worker thread of a bounded pool
keeps its own open connections (one to search as the service account, one to bind as users)
and reuses them: a bind on an open connection costs ≈ 0.5 ms, a new connection ≈ 10-50 ms.
Any failure to talk to the directory becomes :class:`DirectoryUnavailable`, raised from the
ldap3 error, and is never reported as a wrong password.
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
from ldap3.utils.asn1 import decode_message_fast
from ldap3.utils.config import set_config_parameter
from ldap3.utils.conv import escape_filter_chars

from agent import ldapwire, lockout, outcomes, ppolicy
from agent.dncache import DnCache
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
BIND_RESPONSE = 1  # protocolOp [APPLICATION 1]
#: Bind answers after which a cached DN may be the cause (the user moved or was deleted).
STALE_DN_OUTCOMES = frozenset({Outcome.INVALID_CREDENTIALS, Outcome.UNKNOWN_USER})
#: Failures after which the directory may have processed the request.
TIMEOUT_ERRORS = (ldap_errors.LDAPResponseTimeoutError, TimeoutError)
#: Seconds a server that failed is skipped before it is tried again.
SERVER_EXHAUST_SECONDS = 10
#: At most this many ``pwdPolicy`` entries are read when searching the base DN for them.
POLICY_SEARCH_LIMIT = 100
_POLICY_ATTRIBUTES = ("pwdMaxFailure", "pwdLockout")

# ldap3's server pool sleeps this long after every pass over its servers, the last one too
# (10 s by default): a directory that is down would hold each sign-in for 10 s before it is
# answered UNAVAILABLE. One pass, no sleep: the agent answers at once and the next sign-in
# tries again.
set_config_parameter("POOLING_LOOP_TIMEOUT", 0)


#: The password policy request control, encoded once (see :func:`_user_bind`).
PPOLICY_CONTROL = ldapwire.control(ppolicy.CONTROL_OID)

#: A bind answer after which the user may still change the password.
CHANGEABLE_OUTCOMES = frozenset(
    {Outcome.SUCCESS, Outcome.PASSWORD_MUST_CHANGE, Outcome.PASSWORD_EXPIRED}
)
#: AD's password-change failures, by the first 8 hex digits of the message.
AD_CHANGE_REJECTED = "0000052d"
AD_CHANGE_BAD_OLD = "00000056"


def _change_verdict(result: Mapping[str, Any]) -> Verdict:
    """What a password change's result means for the user."""
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
    return Verdict(outcomes.from_bind(code, message))


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
    """One worker thread's open connections; rebuilt after any communication failure."""

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
        """Prepare the server pool and the worker threads; connections open lazily."""
        self.config = config
        tls = (
            ldap3.Tls(ca_certs_file=str(config.ca_file), validate=ssl.CERT_REQUIRED)
            if config.ca_file
            else None
        )
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

    def close(self) -> None:
        """Stop the worker threads (their connections close with them)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def check_all(self, checks: Sequence[Check]) -> list[Verdict | Exception]:
        """Run a batch of checks on the worker threads: a share of the batch per thread.

        Fewer hand-offs than one per check (each costs a future, a thread wake-up and a
        wake-up of the event loop), but never one thread for the whole batch: against a
        directory that takes milliseconds a bind (AD over LDAPS: ≈ 6 ms), or one that times out,
        the checks of a batch must not wait for each other while other threads are idle.

        Returns:
            A verdict per check, in order; or the exception that check raised
            (:class:`DirectoryUnavailable`, or a bug), so that one failure answers one check.
        """
        loop = asyncio.get_running_loop()
        shares = min(len(checks), self.config.pool_size)
        if shares <= 1:
            return await loop.run_in_executor(self._executor, self._check_all, checks)
        done = await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, self._check_all, checks[share::shares])
                for share in range(shares)
            ),
            return_exceptions=True,  # One share's failed hand-off costs the others nothing.
        )
        verdicts: list[Verdict | Exception] = [None] * len(checks)  # type: ignore[list-item]
        for share, answered in enumerate(done):
            if isinstance(answered, BaseException) and not isinstance(answered, Exception):
                raise answered  # Cancellation: never swallowed.
            size = len(range(share, len(checks), shares))
            verdicts[share::shares] = (
                [answered] * size if isinstance(answered, Exception) else answered
            )
        return verdicts

    def _check_all(self, checks: Sequence[Check]) -> list[Verdict | Exception]:
        verdicts: list[Verdict | Exception] = []
        for check in checks:
            try:
                if check.new_password:
                    verdict = (
                        self._change(check.username, check.password, check.new_password)
                        if check.password
                        else Verdict(Outcome.INVALID_CREDENTIALS)
                    )
                elif check.password:
                    verdict = self._verify(check.username, check.password)
                else:  # An empty password is an anonymous bind: it would "succeed".
                    verdict = Verdict(Outcome.INVALID_CREDENTIALS)
            except Exception as error:  # noqa: BLE001 - handed back: it answers this check only
                verdicts.append(error)
            else:
                verdicts.append(verdict)
        return verdicts

    async def verify(self, username: str, password: str) -> Verdict:
        """Check ``password`` for ``username`` (``user@domain``) off the event loop.

        Raises:
            DirectoryUnavailable: When no server of the directory answered.
        """
        if not password:  # An empty password is an anonymous bind: it would "succeed".
            return Verdict(Outcome.INVALID_CREDENTIALS)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._verify, username, password)

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
        bound = self._bind(conns, dn, old, fast=False)
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

    def _open(self, user: str | None, password: str | None, *, simple: bool) -> ldap3.Connection:
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

    def _verify(self, username: str, password: str) -> Verdict:
        conns = self._connections()
        reused = conns.user is not None
        try:
            return self._verify_on(conns, username, password)
        except COMMUNICATION_ERRORS as error:
            conns.reset()
            # A timeout may mean the server did try the password: trying it again could count
            # it twice. Only a connection found dead (closed while idle) is retried.
            if not reused or isinstance(error, TIMEOUT_ERRORS):
                raise DirectoryUnavailable("the directory did not answer") from error
        # The server may have closed an idle connection: one fresh try.
        try:
            return self._verify_on(conns, username, password)
        except COMMUNICATION_ERRORS as error:
            conns.reset()
            raise DirectoryUnavailable("the directory did not answer") from error

    def _verify_on(self, conns: _ThreadConnections, username: str, password: str) -> Verdict:
        login = self.config.login_value(username)
        cached = self._dns.get(login)
        dn = cached or self._find(conns, login)
        if dn is None:
            return Verdict(Outcome.UNKNOWN_USER)
        verdict = self._bind(conns, dn, password)
        if cached is None:
            if verdict.outcome != Outcome.UNKNOWN_USER:
                self._dns.put(login, dn)
            return verdict
        if verdict.outcome not in STALE_DN_OUTCOMES:
            return verdict
        # The cached DN may be stale: look again, and bind again only if it moved (the same
        # DN failing twice would count twice against the user in the directory).
        self._dns.forget(login)
        fresh = self._find(conns, login)
        if fresh is None:
            return Verdict(Outcome.UNKNOWN_USER)
        if fresh == dn:
            self._dns.put(login, dn)
            return verdict
        self._dns.put(login, fresh)
        return self._bind(conns, fresh, password)

    def _bind(
        self, conns: _ThreadConnections, dn: str, password: str, *, fast: bool = True
    ) -> Verdict:
        """Bind as ``dn`` on the thread's user connection; ``fast`` skips ldap3's encoder.

        A sign-in takes the fast path (:func:`_user_bind`); a password change binds through
        ldap3 itself, whose connection state (``bound``) the change then relies on.
        """
        if conns.user is None:
            conns.user = self._open(None, None, simple=True)
        user = conns.user
        # The password policy control: OpenLDAP says "expired", "locked" or "must change"
        # only in the response control (must-change even on a successful bind); AD ignores
        # it (not critical) and answers with its data subcodes instead.
        if fast:
            result = _user_bind(user, dn, password)
        else:
            user.user, user.password = dn, password
            try:
                user.bind(read_server_info=False, controls=[ppolicy.request_control()])
            finally:
                user.password = None
            result = user.result or {}
        code = result.get("result", -1)
        policy = ppolicy.parse_response(result.get("controls"))
        decided = ppolicy.outcome(code, policy)
        if decided is None:
            decided = outcomes.from_bind(code, result.get("message", ""))
        return Verdict(decided, ppolicy.warning_message(policy))

    def _searcher(self, conns: _ThreadConnections) -> ldap3.Connection:
        """The thread's search connection (service account or anonymous), bound."""
        if conns.search is None:
            config = self.config
            conns.search = self._open(
                config.bind_dn or None, config.bind_password or None, simple=bool(config.bind_dn)
            )
            if not conns.search.bind(read_server_info=False):
                description = (conns.search.result or {}).get("description", "no answer")
                conns.reset()
                raise ldap_errors.LDAPCommunicationError(f"service bind failed: {description}")
        return conns.search

    def _find(self, conns: _ThreadConnections, login: str) -> str | None:
        """Return the DN the login value belongs to; None for none, and for several."""
        search = self._searcher(conns)
        search_filter = f"({self.config.login_attribute}={escape_filter_chars(login)})"
        search.search(
            self.config.base_dn,
            search_filter,
            ldap3.SUBTREE,
            attributes=[],
            size_limit=2,
        )
        code = (search.result or {}).get("result", -1)
        if code not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise ldap_errors.LDAPCommunicationError(f"search failed with result {code}")
        entries = [e for e in search.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) > 1:
            log.warning("directory.ambiguous_login", login_attribute=self.config.login_attribute)
            return None
        return str(entries[0]["dn"]) if entries else None


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


def _user_bind(conn: ldap3.Connection, dn: str, password: str) -> Mapping[str, Any]:
    """A simple bind with the password policy control: ldap3's bind, minus its encoder.

    The request is encoded by :mod:`agent.ldapwire` (the same bytes ldap3 would send, ≈ 2 µs
    instead of ≈ 170 µs through pyasn1); the password goes through ldap3's own SASLprep, and
    the answer through ldap3's own receiving and fast decoder, as ``Connection.bind`` does.
    ldap3's ``bound`` and ``result`` are left alone: only sign-ins bind this way.

    Returns:
        ldap3's dict of the bind response (``result``, ``message``, ``controls`` ...).

    Raises:
        LDAPCommunicationError: The connection is closed, was closed by the server, or
            answered something other than this bind (then it is not used again).
    """
    if conn.closed or conn.socket is None:
        raise ldap_errors.LDAPSocketOpenError("the connection is closed")
    message_id = conn.server.next_message_id()
    request = ldapwire.bind_request(
        message_id, dn, validate_simple_password(password), (PPOLICY_CONTROL,)
    )
    conn.socket.sendall(request)
    del request
    strategy = conn.strategy
    # Whole messages; raises on a socket error or timeout, returns none when the server closed.
    messages = strategy.receiving()
    if not messages:
        raise ldap_errors.LDAPSessionTerminatedByServerError("the directory closed the connection")
    # The stubs leave ldap3's fast decoder untyped: each is a dict of the message's parts.
    decoded: list[dict[str, Any]] = [
        decode_message_fast(raw)  # type: ignore[no-untyped-call]
        for raw in messages
    ]
    answer = next(
        (m for m in decoded if m["messageID"] == message_id and m["protocolOp"] == BIND_RESPONSE),
        None,
    )
    if answer is None:
        # A notice of disconnection (id 0), or anything else this bind did not ask for.
        raise ldap_errors.LDAPSocketReceiveError("unexpected answer to a bind")
    if len(decoded) > 1:
        # The answer came with something else (a notice of disconnection): the answer stands
        # (the password was checked: checking it again would count it twice), the connection
        # does not.
        with contextlib.suppress(Exception):
            conn.unbind()
    response: Mapping[str, Any] = strategy.decode_response_fast(answer)
    return response
