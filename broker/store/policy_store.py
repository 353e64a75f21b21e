"""What the sign-in policy persists: the seam its store implementations fill.

Part of the store's protocols (:mod:`broker.store.protocols`, whose rules hold here too: calls
are synchronous and short, and a shared store out of reach raises
:class:`pta.errors.StoreUnavailable`): policies, banned terms, lockout counters and what is
decided under a user's lock, familiar networks, authenticators, the memory of refused
passwords, MFA challenges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Sequence

    from broker.policy.lockout import Counter
    from broker.policy.tenant_policy import TenantPolicy
    from broker.store.records import Challenge, CounterKey, MfaRecord, UserLockout

_T = TypeVar("_T")


class PolicyStore(Protocol):
    """What the sign-in policy must not forget: policies, counters, networks, MFA secrets.

    Nothing about a password is ever kept; a TOTP secret only sealed under the MFA key.
    """

    def tenant_policy(self, tenant: str) -> TenantPolicy:
        """A tenant's policy (the defaults when it never set one)."""

    def tenant_policies(self) -> dict[str, TenantPolicy]:
        """Every tenant's policy that differs from the defaults."""

    def set_tenant_policy(self, tenant: str, policy: TenantPolicy) -> None:
        """Replace a tenant's policy."""

    def banned_terms(self, tenant: str) -> list[tuple[str, str]]:
        """A tenant's own banned password terms: (as typed, normalised), in the order added."""

    def banned_revisions(self) -> dict[str, int]:
        """Per tenant with a list, a number that changes whenever its list does."""

    def change_banned_terms(
        self,
        tenant: str,
        *,
        add: Sequence[tuple[str, str]] = (),
        remove: Sequence[str] = (),
        limit: int,
    ) -> tuple[int, int, int]:
        """Add (as typed, normalised) terms and remove normalised ones, all or nothing.

        Returns:
            How many were added, removed, and how many the tenant has now.

        Raises:
            InvalidRequest: The list would hold more than ``limit`` terms (nothing changes).
        """

    def counters(self) -> dict[CounterKey, Counter]:
        """Every counter that is not clean."""

    def save_counter(self, key: CounterKey, counter: Counter) -> None:
        """Write one counter; a clean one is deleted."""

    def with_user(self, tenant: str, user: str, work: Callable[[UserLockout], _T]) -> _T:
        """Run ``work`` on one user's counters and flights under a lock every process honours.

        ``work`` reads and changes the state in place; what it changed is written when it
        returns, all or nothing (nothing when it raises). Of racing calls for one user, each
        sees what the one before it wrote: guesses spread over many brokers of one store are
        counted, and let through, exactly as at one broker.
        """

    def submit_with_user(
        self, tenant: str, user: str, work: Callable[[UserLockout], _T]
    ) -> concurrent.futures.Future[_T]:
        """:meth:`with_user` without waiting for it: its future (for an event loop).

        A store one thread at a time may use (SQLite) runs it now, on the caller's thread.
        """

    def clear_counters(self, tenant: str, user: str | None = None) -> int:
        """An administrator's unlock of one user's counters, or a whole tenant's; how many.

        The passwords they had refused lately (the shared repeat memory) are forgotten with
        them.
        """

    def forget_counters_before(self, horizon: float) -> None:
        """Delete counters that lock nobody and whose last failure is older than ``horizon``."""

    def known_accounts(self) -> set[tuple[str, str]]:
        """(tenant, user key) of every account a directory lately said exists."""

    def add_known_account(self, tenant: str, user: str, now: float) -> None:
        """Remember that a directory answered for this account (its counters are never shed)."""

    def forget_known_accounts_before(self, horizon: float) -> None:
        """Forget accounts confirmed before ``horizon`` that have no counter left."""

    def account_rules(self) -> list[tuple[str, str, str, str, str]]:
        """(tenant, agent id, domain, directory, scope) of every agent's last hello."""

    def replace_account_rules(
        self, tenant: str, agent_id: str, rules: Sequence[tuple[str, str, str]]
    ) -> None:
        """Replace what an agent said of its directories, per domain: (domain, directory, scope)."""

    def familiar(self) -> dict[tuple[str, str], dict[str, float]]:
        """(tenant, user) -> {network prefix: last successful sign-in from it}."""

    def save_familiar(self, tenant: str, user: str, prefix: str, last_success: float) -> None:
        """Record a successful sign-in from a network."""

    def forget_familiar_before(self, tenant: str, horizon: float) -> None:
        """Delete a tenant's networks not signed in from since ``horizon``."""

    def mfa(self, tenant: str, user: str) -> MfaRecord | None:
        """A user's sealed TOTP secret, if one is enrolled."""

    def enrol_mfa(self, tenant: str, user: str, sealed: bytes, now: float) -> None:
        """Store a user's new sealed TOTP secret, replacing any earlier one."""

    def use_mfa_step(self, tenant: str, user: str, step: int) -> bool:
        """Spend a TOTP time step, atomically: true only if later than every step used before."""

    def remove_mfa(self, tenant: str, user: str) -> bool:
        """Remove a user's authenticator; whether there was one."""

    def mfa_users(self, tenant: str) -> list[tuple[str, float]]:
        """(user, enrolled at) of every user of a tenant with an authenticator."""

    def forget_repeats(self, tenant: str, user: str | None = None) -> None:
        """Forget a user's refused passwords, or a whole tenant's."""

    def forget_repeats_before(self, now: float) -> None:
        """Delete the entries expired by ``now``."""

    def open_challenge(self, key: bytes, challenge: Challenge) -> None:
        """Keep an open MFA challenge under ``key`` (a hash of its id: never the id itself)."""

    def spend_challenge(self, key: bytes, now: float) -> Challenge | None:
        """Take one try of an unexpired challenge with tries left, atomically; None otherwise.

        Of racing calls for the last try, one gets it; the record says the tries left after.
        """

    def close_challenge(self, key: bytes) -> None:
        """Delete a challenge (answered or used up)."""

    def forget_challenges_before(self, now: float) -> None:
        """Delete the challenges expired by ``now``."""
