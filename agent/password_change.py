"""A user's password change in their directory, as the user: bind with the old, write the new.

The user binds with the old password first (which also tells a locked or disabled account
apart), then changes it: on Active Directory by replacing ``unicodePwd`` (delete the old value,
add the new one, over TLS), on OpenLDAP with the Password Modify extended operation (RFC 3062)
and the password policy control. ldap3 on a worker thread (:mod:`agent.ldap_threads`): changes
are rare, and ldap3 speaks both. Any failure to talk to the directory becomes
:class:`DirectoryUnavailable`, never a wrong password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from agent import outcomes, ppolicy
from agent.ldap_threads import COMMUNICATION_ERRORS
from agent.verdicts import Verdict
from pta.errors import DirectoryUnavailable
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping

    import ldap3

    from agent.ldap_threads import ThreadConnections, ThreadedLdap

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome

CONSTRAINT_VIOLATION = 19
#: A password change's answers that say the server could not do it now, not that it refuses:
#: none (-1), operationsError, timeLimitExceeded, adminLimitExceeded, busy, unavailable, other.
TRANSIENT_CHANGE_CODES = frozenset({-1, 1, 3, 11, 51, 52, 80})
#: A bind answer after which the user may still change the password.
CHANGEABLE_OUTCOMES = frozenset(
    {Outcome.SUCCESS, Outcome.PASSWORD_MUST_CHANGE, Outcome.PASSWORD_EXPIRED}
)
#: AD's password-change failures, by the first 8 hex digits of the message.
AD_CHANGE_REJECTED = "0000052d"
AD_CHANGE_BAD_OLD = "00000056"


def change_verdict(result: Mapping[str, Any]) -> Verdict:
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


class PasswordChange:
    """Changes passwords in one directory, on its worker threads."""

    def __init__(self, threads: ThreadedLdap) -> None:
        """Change through ``threads`` (the directory's ldap3 connections)."""
        self._threads = threads
        self._ad = threads.config.kind == "ad"

    async def change(self, username: str, old: str, new: str) -> Verdict:
        """Change ``username``'s password from ``old`` to ``new``, as the user.

        Raises:
            DirectoryUnavailable: When no server of the directory answered.
        """
        if not old or not new:
            return Verdict(Outcome.INVALID_CREDENTIALS)
        return await self._threads.run(self._change, username, old, new)

    def _change(self, username: str, old: str, new: str) -> Verdict:
        conns = self._threads.connections()
        try:
            return self._change_on(conns, username, old, new)
        except COMMUNICATION_ERRORS as error:
            conns.reset()
            raise DirectoryUnavailable("the directory did not answer") from error

    def _change_on(self, conns: ThreadConnections, username: str, old: str, new: str) -> Verdict:
        threads = self._threads
        dn = threads.find(conns, threads.config.login_value(username))
        if dn is None:
            return Verdict(Outcome.UNKNOWN_USER)
        bound = threads.bind(conns, dn, old)
        # Must-change and expired passwords are what a change is for; any other failure stands.
        if bound.outcome not in CHANGEABLE_OUTCOMES:
            return bound
        user = conns.user
        if user is None or not user.bound:
            # The directory refused the bind itself (AD's 773/532): change over a fresh
            # service-account session, the old password proving the user.
            return self._ad_change(threads.searcher(conns), dn, old, new) if self._ad else bound
        if self._ad:
            return self._ad_change(user, dn, old, new)
        user.extend.standard.modify_password(
            user=dn, old_password=old, new_password=new, controls=[ppolicy.request_control()]
        )
        return change_verdict(user.result or {})

    def _ad_change(self, conn: ldap3.Connection, dn: str, old: str, new: str) -> Verdict:
        conn.extend.microsoft.modify_password(dn, new, old)
        return change_verdict(conn.result or {})
