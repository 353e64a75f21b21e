"""What each directory does with wrong passwords, told to the broker so its own lockout trips first.

The broker locks a user out in the cloud after some wrong passwords; that number must stay
below the directory's own threshold, or whoever guesses at the sign-in page locks the user out
on premises, for every application. So after each welcome the agent reports the directory's
lockout threshold for every domain it serves, re-reads it every :data:`REFRESH_INTERVAL`, and
reports again only when something changed.

Where the number comes from (read by :mod:`agent.lockout_policy`, over the worker threads'
search connection):

- Active Directory: ``lockoutThreshold`` on the domain object, the naming context the rootDSE
  calls ``defaultNamingContext``; 0 means it never locks. Fine-grained password policies
  (PSOs: ``msDS-PasswordSettings`` objects under ``CN=Password Settings Container``) may give
  some users a lower threshold. They are *not* read: a service account can seldom see them,
  and which one applies to whom is resolved per user. The domain's number is reported.
- OpenLDAP: a ppolicy entry's ``pwdMaxFailure``, which locks only with ``pwdLockout: TRUE``
  (absent means FALSE). The entry is the one ``password_policy_dn`` names, or else every
  ``pwdPolicy`` entry under the base DN, of which the *lowest* locking threshold is reported: a
  user may fall under any of them, and the broker must stay below each. (slapd's
  ``ppolicy_default`` lives in its configuration, which the agent cannot read.)

Reading never costs the stream: any failure (directory down, no rights, no entry) is a policy
with ``known`` false and the reason in ``source``, and the loop goes on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from pta.v1 import agent_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence


log = structlog.get_logger()

#: How often the agent reads its directories' thresholds again (seconds).
REFRESH_INTERVAL = 600.0
#: How long one directory may take to answer before its policy is reported unknown.
READ_TIMEOUT = 30.0
#: The contract's ``lockout_threshold`` is a uint32.
_MAX_THRESHOLD = 2**32 - 1

#: An LDAP entry as read: its DN and its attributes, names lower-cased, values as text.
Entry = tuple[str, "Mapping[str, Sequence[str]]"]


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """One directory's answer: locks after ``threshold`` failed binds (0: never), if known."""

    known: bool
    threshold: int = 0
    #: Where it was read, or why it could not be, for operators (never a secret).
    source: str = ""


def unknown(reason: str) -> LockoutPolicy:
    """A policy that could not be read, saying why."""
    return LockoutPolicy(known=False, source=reason)


def _number(values: Sequence[str], name: str, dn: str) -> int:
    value = int(values[0]) if values else 0
    if not 0 <= value <= _MAX_THRESHOLD:
        raise ValueError(f"{name} out of range on {dn}")
    return value


def from_ad(naming_context: str, values: Sequence[str]) -> LockoutPolicy:
    """The domain object's ``lockoutThreshold`` values (none: not readable) as a policy."""
    if not values:
        return unknown(f"lockoutThreshold not readable on {naming_context}")
    try:
        threshold = _number(values, "lockoutThreshold", naming_context)
    except ValueError:
        return unknown(f"lockoutThreshold is not a count on {naming_context}")
    return LockoutPolicy(
        known=True, threshold=threshold, source=f"AD lockoutThreshold on {naming_context}"
    )


def ppolicy_threshold(dn: str, attributes: Mapping[str, Sequence[str]]) -> int:
    """One ppolicy entry's threshold: ``pwdMaxFailure`` if ``pwdLockout`` is TRUE, else 0.

    Raises:
        ValueError: When ``pwdMaxFailure`` is not a count.
    """
    locks = (attributes.get("pwdlockout") or ["FALSE"])[0].upper() == "TRUE"
    max_failure = _number(attributes.get("pwdmaxfailure") or [], "pwdMaxFailure", dn)
    return max_failure if locks else 0


def from_ppolicy(entries: Sequence[Entry], where: str) -> LockoutPolicy:
    """The lowest locking threshold among ppolicy entries; 0 when none of them locks.

    Args:
        entries: The ``pwdPolicy`` entries read.
        where: What was searched, for the reason when nothing was found.
    """
    if not entries:
        return unknown(f"no readable pwdPolicy entry ({where})")
    thresholds: list[tuple[int, str]] = []
    for dn, attributes in entries:
        try:
            thresholds.append((ppolicy_threshold(dn, attributes), dn))
        except ValueError:
            return unknown(f"pwdMaxFailure is not a count on {dn}")
    locking = [found for found in thresholds if found[0] > 0]
    if locking:
        threshold, dn = min(locking)
        return LockoutPolicy(known=True, threshold=threshold, source=f"pwdMaxFailure on {dn}")
    if len(entries) == 1:
        dn, attributes = entries[0]
        locks = (attributes.get("pwdlockout") or ["FALSE"])[0].upper() == "TRUE"
        why = "pwdMaxFailure 0" if locks else "pwdLockout FALSE"
        return LockoutPolicy(known=True, threshold=0, source=f"{why} on {dn}")
    return LockoutPolicy(
        known=True, threshold=0, source=f"none of {len(entries)} pwdPolicy entries locks ({where})"
    )


class PolicySource(Protocol):
    """A directory whose lockout policy can be read (:class:`agent.directory.LdapDirectory`)."""

    async def lockout_policy(self) -> LockoutPolicy:
        """Read the policy; never raises for the directory's sake."""


class PolicyReporter:
    """Reads the lockout policy behind each domain, each directory once per report."""

    def __init__(self, directory_for: Callable[[str], PolicySource | None]) -> None:
        """Report on the directories ``directory_for`` picks per domain."""
        self._directory_for = directory_for

    async def report(self, domains: Iterable[str]) -> agent_pb2.DirectoryReport:
        """Read every directory behind ``domains`` at once; one policy per served domain."""
        chosen = {
            domain: directory
            for domain in sorted(set(domains))
            if (directory := self._directory_for(domain)) is not None
        }
        distinct = list({id(d): d for d in chosen.values()}.values())
        read = await asyncio.gather(*(_read(d) for d in distinct))
        by_directory = {id(d): policy for d, policy in zip(distinct, read, strict=True)}
        return agent_pb2.DirectoryReport(
            policies=[
                agent_pb2.DirectoryPolicy(
                    domain=domain,
                    known=policy.known,
                    lockout_threshold=policy.threshold,
                    source=policy.source,
                )
                for domain, directory in chosen.items()
                for policy in [by_directory[id(directory)]]
            ]
        )


async def _read(directory: PolicySource) -> LockoutPolicy:
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await directory.lockout_policy()
    except TimeoutError:
        return unknown(f"the directory did not answer within {READ_TIMEOUT:g} s")


async def keep_reporting(
    reporter: PolicyReporter,
    domains: Sequence[str],
    send: Callable[[agent_pb2.DirectoryReport], None],
    *,
    interval: float = REFRESH_INTERVAL,
) -> None:
    """Report at once, then re-read every ``interval`` and report again what changed.

    Runs until cancelled and raises nothing else: it shares a task group with the stream's
    reader and writer, and a failure here must not end the stream.

    Args:
        reporter: Reads the policies.
        domains: The domains the broker accepted in its welcome.
        send: Queues a report on the stream (without waiting: sign-ins go first).
        interval: Seconds between reads.
    """
    last: agent_pb2.DirectoryReport | None = None
    while True:
        try:
            report = await reporter.report(domains)
        except Exception:  # A report must never cost the stream.
            log.exception("directory.policy_read_failed")
        else:
            if report != last:
                send(report)
                last = report
                for policy in report.policies:
                    log.info(
                        "directory.policy_sent",
                        domain=policy.domain,
                        known=policy.known,
                        lockout_threshold=policy.lockout_threshold,
                        source=policy.source,
                    )
        await asyncio.sleep(interval)
