"""Where the agent asks the directory: find a user, bind as them, say what the directory said.

A sign-in's search and bind run on the event loop (:mod:`agent.ldappool`: the hot path, no
thread hop). A password change (:mod:`agent.password_change`) and a read of the lockout policy
(:mod:`agent.lockout_policy`) go through ldap3 on the directory's worker threads
(:mod:`agent.ldap_threads`). Any failure to talk to the directory becomes
:class:`DirectoryUnavailable`, raised from the underlying error, and is never reported as a
wrong password.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agent import ldapwire, lockout_policy, ppolicy
from agent.dncache import DnCache
from agent.ldap_threads import ThreadedLdap, one_dn
from agent.ldappool import BindPool, SearchPool, tls_context
from agent.metrics import OFF
from agent.password_change import PasswordChange
from agent.verdicts import Check, Verdict, bind_verdict
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from agent.config import DirectoryConfig
    from agent.lockout import LockoutPolicy
    from agent.metrics import Counts

Outcome = outcome_pb2.Outcome

#: Bind answers after which a cached DN may be the cause (the user moved or was deleted).
STALE_DN_OUTCOMES = frozenset({Outcome.INVALID_CREDENTIALS, Outcome.UNKNOWN_USER})
#: The password policy request control, encoded once, for every sign-in's bind.
PPOLICY_CONTROL = ldapwire.control(ppolicy.CONTROL_OID)

__all__ = ["PPOLICY_CONTROL", "Check", "LdapDirectory", "Verdict"]


class LdapDirectory:
    """Checks passwords against one directory (a domain's servers)."""

    def __init__(self, config: DirectoryConfig, *, metrics: Counts = OFF) -> None:
        """Prepare the pools and the worker threads; connections open lazily.

        ``metrics``: where the pools count each request and each server's state.
        """
        self.config = config
        ca_file = str(config.ca_file) if config.ca_file else None
        self.threads = ThreadedLdap(config)
        self._changes = PasswordChange(self.threads)
        self._dns = DnCache(ttl=config.dn_cache_ttl, size=config.dn_cache_size)
        settings: dict[str, Any] = {
            "size": config.pool_size,
            "connect_timeout": config.connect_timeout,
            "receive_timeout": config.receive_timeout,
            "tls": tls_context(ca_file),
            "start_tls": config.start_tls,
            "metrics": metrics,
        }
        self._binds = BindPool(config.urls, **settings)
        service = None
        if config.bind_dn:
            service = (config.bind_dn, ldapwire.sasl_prepped(config.bind_password))
        self._searches = SearchPool(config.urls, service=service, **settings)

    def close(self) -> None:
        """Stop the worker threads (their connections close with them) and the pools."""
        self.threads.close()
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

        The password is sent as ``Connection.bind`` would send it
        (:func:`agent.ldapwire.sasl_prepped`).
        """
        result = await self._binds.bind(dn, ldapwire.sasl_prepped(password), (PPOLICY_CONTROL,))
        return bind_verdict(result)

    async def _lookup(self, login: str) -> str | None:
        """Find the login's DN, on the event loop (the service account's search)."""
        config = self.config
        code, dns = await self._searches.find(
            config.base_dn, config.login_attribute, login, size_limit=2
        )
        return one_dn(code, dns, config.login_attribute)

    async def change_password(self, username: str, old: str, new: str) -> Verdict:
        """Change ``username``'s password (:class:`agent.password_change.PasswordChange`).

        Raises:
            DirectoryUnavailable: When no server of the directory answered.
        """
        return await self._changes.change(username, old, new)

    async def lockout_policy(self) -> LockoutPolicy:
        """Read after how many wrong passwords this directory locks an account.

        See :mod:`agent.lockout_policy`; never raises for the directory's sake.
        """
        return await lockout_policy.read(self.threads)
