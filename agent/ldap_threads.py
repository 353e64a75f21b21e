"""ldap3 on worker threads: what runs off the event loop, password changes and policy reads.

ldap3 blocks and is not thread-safe per connection: each worker thread of a bounded pool keeps
its own open connections (one to search as the service account, one to bind as the user) and
reuses them: an operation on an open connection costs ≈ 0.5 ms, a new connection ≈ 10-50 ms.
A sign-in never comes here (:mod:`agent.ldappool` runs its search and bind on the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import ldap3
import structlog
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.config import set_config_parameter
from ldap3.utils.conv import escape_filter_chars

from agent import ppolicy
from agent.ldappool import SERVER_EXHAUST_SECONDS
from agent.verdicts import Verdict, bind_verdict
from pta.errors import DirectoryUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.config import DirectoryConfig

log = structlog.get_logger()
_P = ParamSpec("_P")
_T = TypeVar("_T")

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

# ldap3's server pool sleeps this long after every pass over its servers, the last one too
# (10 s by default): a directory that is down would hold each request for 10 s before it is
# answered UNAVAILABLE. One pass, no sleep: the agent answers at once and the next one tries
# again.
set_config_parameter("POOLING_LOOP_TIMEOUT", 0)


class ThreadConnections:
    """One worker thread's open connections; rebuilt after any communication failure.

    ``user`` binds only for password changes; sign-ins bind on the event loop.
    """

    def __init__(self) -> None:
        """None open yet: they open when first needed."""
        self.search: ldap3.Connection | None = None
        self.user: ldap3.Connection | None = None

    def reset(self) -> None:
        """Drop both connections (a broken one may fail to close; it is dropped either way)."""
        for conn in (self.search, self.user):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.unbind()
        self.search = self.user = None


def one_dn(code: int, dns: Sequence[str], login_attribute: str) -> str | None:
    """The DN a login search found; None for none, and for several.

    Raises:
        DirectoryUnavailable: The directory refused the search itself.
    """
    if code not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
        raise DirectoryUnavailable(f"the directory refused the search (result {code})")
    if len(dns) > 1:
        log.warning("directory.ambiguous_login", login_attribute=login_attribute)
        return None
    return dns[0] if dns else None


class ThreadedLdap:
    """A directory's servers through ldap3, on a bounded pool of worker threads."""

    def __init__(self, config: DirectoryConfig) -> None:
        """Prepare the server pool and the worker threads; connections open lazily."""
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
        self._executor = ThreadPoolExecutor(config.pool_size, thread_name_prefix="ldap")

    def close(self) -> None:
        """Stop the worker threads (their connections close with them)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run blocking ldap3 ``work`` on a worker thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(*args, **kwargs))

    def connections(self) -> ThreadConnections:
        """The calling worker thread's connections."""
        conns: ThreadConnections | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = ThreadConnections()
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

    def searcher(self, conns: ThreadConnections) -> ldap3.Connection:
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

    def find(self, conns: ThreadConnections, login: str) -> str | None:
        """The login's DN, searched as the service account on the thread's connection."""
        search = self.searcher(conns)
        search_filter = f"({self.config.login_attribute}={escape_filter_chars(login)})"
        search.search(
            self.config.base_dn, search_filter, ldap3.SUBTREE, attributes=[], size_limit=2
        )
        entries = [e for e in search.response or [] if e.get("type") == "searchResEntry"]
        return one_dn(
            (search.result or {}).get("result", -1),
            [str(e["dn"]) for e in entries],
            self.config.login_attribute,
        )

    def bind(self, conns: ThreadConnections, dn: str, password: str) -> Verdict:
        """Bind as ``dn`` on the thread's user connection, with the password policy control.

        A password change then relies on that connection's state (``bound``).
        """
        if conns.user is None:
            conns.user = self.open_connection(None, None, simple=True)
        user = conns.user
        user.user, user.password = dn, password
        try:
            user.bind(read_server_info=False, controls=[ppolicy.request_control()])
        finally:
            user.password = None
        return bind_verdict(user.result or {})
