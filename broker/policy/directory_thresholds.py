"""What the agents said of their directories' own lockout, and when the broker's comes too late.

An agent reads its directory's lockout threshold (AD's lockoutThreshold, OpenLDAP's
pwdMaxFailure) and reports it; the lowest reported for a domain bounds how many wrong
passwords the broker lets reach that directory at once (the directory guard,
:func:`broker.policy.lockout.directory_budget`). Kept apart from the gate's counters: it
changes when agents report, not at each sign-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.policy import lockout

if TYPE_CHECKING:
    from collections.abc import Iterable

    from broker.store.records import DirectoryPolicyRecord, Location


class DirectoryThresholds:
    """The lowest threshold per tenant and domain, from every agent's latest report."""

    def __init__(self) -> None:
        """Know nothing yet (unknown: no directory guard)."""
        #: tenant -> domain -> the lowest threshold its agents reported (0: known never to
        #: lock; absent: unknown).
        self.lowest: dict[str, dict[str, int]] = {}
        self._reports: dict[str, dict[tuple[str, str], int]] = {}

    def reported(self, tenant: str, reports: Iterable[DirectoryPolicyRecord]) -> None:
        """Remember what an agent said of its directories' own lockout (the lowest one wins)."""
        by_agent = self._reports.setdefault(tenant, {})
        for report in reports:
            key = (report.domain, report.agent_id)
            if report.known:
                by_agent[key] = report.lockout_threshold
            else:  # This agent cannot tell (any more); another agent's word still stands.
                by_agent.pop(key, None)
        said: dict[str, list[int]] = {}
        for (domain, _), threshold in by_agent.items():
            said.setdefault(domain, []).append(threshold)
        self.lowest[tenant] = {
            domain: lowest
            for domain, thresholds in said.items()
            if (lowest := lockout.lowest_threshold(thresholds)) is not None
        }

    def known(self, tenant: str, domain: str) -> bool:
        """Whether an agent said what the domain's directory locks after."""
        return domain in self.lowest.get(tenant, {})

    def budget(self, tenant: str, domain: str, location: Location) -> int | None:
        """How many wrong passwords may be in the directory's count at once (None: unknown)."""
        threshold = self.lowest.get(tenant, {}).get(domain)
        return lockout.directory_budget(threshold, unfamiliar=location == "unfamiliar")


def threshold_warning(broker_threshold: int, directory_threshold: int) -> str:
    """Why the broker's lockout would come too late for the directory's, or ``""``."""
    if directory_threshold <= 0:
        return ""
    if broker_threshold <= 0:
        return (
            f"the broker's lockout is off and the directory locks after {directory_threshold}:"
            " guesses in the cloud can lock users out on premises"
        )
    if broker_threshold >= directory_threshold:
        return (
            f"set the broker's threshold below the directory's {directory_threshold}"
            f" (it is {broker_threshold}), or cloud guesses lock users out on premises"
        )
    return ""
