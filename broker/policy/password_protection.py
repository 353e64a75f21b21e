"""Password protection: a new password is held to the banned lists before any agent sees it.

The evaluation is :mod:`broker.policy.banned_passwords` (pure). This module owns the lists: the
global one shipped in the wheel (``broker/policy/data/common_passwords.txt``, indexed once per
process), and each tenant's own terms from the store (``pta-broker tenant banned-passwords``),
re-indexed only when the store says that tenant's list changed.
:meth:`~broker.policy.signin_policy.SignInPolicy.reload` calls :meth:`PasswordProtection.reload`
when the CLI wrote to the store, so a change applies within a quarter of a second, on every
broker of the store.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING

import structlog

from broker.policy.banned_passwords import BannedList, evaluate, personal_terms
from broker.policy.verdicts import Outcome, Verdict

if TYPE_CHECKING:
    from broker.store.policy_store import PolicyStore
    from pta.names import Upn

log = structlog.get_logger()
#: The most terms a tenant may ban (Entra allows 1,000; each costs only memory here).
MAX_TENANT_TERMS = 5000
COMMON_PASSWORDS = "common_passwords.txt"
#: What the user is told: why, in their words, never which list or term.
TOO_GUESSABLE = (
    "the new password is too easy to guess: it is too close to a commonly used password or"
    " to a name (yours or your organisation's); choose another"
)
TOO_SHORT = "the new password is too short to be safe: choose a longer one"


@functools.cache
def common_passwords() -> BannedList:
    """The global list, read from the package and indexed once per process (≈ 0.3 s)."""
    text = (resources.files("broker.policy") / "data" / COMMON_PASSWORDS).read_text(
        encoding="utf-8"
    )
    return BannedList.build(line for line in text.splitlines() if line and not line.startswith("#"))


class PasswordProtection:
    """The banned lists of every tenant, and the verdict on a new password."""

    def __init__(self, store: PolicyStore, common: BannedList | None = None) -> None:
        """Index the global list (or ``common``, for tests) and every tenant's own."""
        self._store = store
        self._common = common_passwords() if common is None else common
        #: tenant -> (the store's revision of its list, the list indexed).
        self._tenants: dict[str, tuple[int, BannedList]] = {}
        self.reload()

    def reload(self) -> None:
        """Re-index the tenants whose list changed in the store since the last call."""
        revisions = self._store.banned_revisions()
        for tenant in self._tenants.keys() - revisions.keys():
            del self._tenants[tenant]
        for tenant, revision in revisions.items():
            held = self._tenants.get(tenant)
            if held is not None and held[0] == revision:
                continue
            terms = BannedList.build(n for _, n in self._store.banned_terms(tenant))
            self._tenants[tenant] = (revision, terms)
            log.info("banned_passwords.loaded", tenant=tenant, terms=terms.size)

    def refusal(self, tenant: str, upn: Upn, new_password: str) -> Verdict | None:
        """The answer to a password change whose new password is banned; None if it is not.

        Args:
            tenant: The user's organisation (its list and its name count).
            upn: The user as typed (their name parts count).
            new_password: The password they want.
        """
        held = self._tenants.get(tenant)
        lists = (self._common,) if held is None else (self._common, held[1])
        result = evaluate(new_password, lists, personal_terms(upn.local, upn.domain, tenant))
        if result.accepted:
            return None
        return Verdict(
            outcome=Outcome.PASSWORD_REJECTED,
            message=TOO_SHORT if result.reason == "short" else TOO_GUESSABLE,
            decided_by="banned_password",
        )
