"""The broker's sign-in policy: the lockout gate before a check, MFA and a token after it.

``begin`` runs before anything is sealed; the gate (:mod:`broker.policy.lockout_gate`) answers a
locked user or a repeat itself, so that nothing reaches an agent or the directory. ``end``
hands the directory's answer to the gate (only wrong passwords count) and, for a right
password, makes the network familiar. ``grant`` turns a right password into a token or,
when the tenant wants a second factor, an MFA challenge, which ``complete`` finishes. The
policy's own answers and the attempt itself are in :mod:`broker.policy.verdicts`.

Familiar networks live in memory for the hot path and are written through to the store;
the store is re-read when the CLI changed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import TYPE_CHECKING

import structlog

from broker.policy.accounts import AccountMap, typed_key
from broker.policy.directory_thresholds import threshold_warning
from broker.policy.lockout_gate import MAX_COUNTERS, LockoutGate
from broker.policy.password_protection import PasswordProtection
from broker.policy.second_factor import SecondFactor
from broker.policy.tenant_policy import TenantPolicy, familiar_prefix, in_networks
from broker.policy.user_turns import MAX_WAITING_PER_USER
from broker.policy.verdicts import REPEATED, Attempt, Outcome, Verdict
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

    from broker.policy import mfa
    from broker.policy.accounts import AccountRule
    from broker.policy.lockout_ledger import Ledger
    from broker.policy.recent_failures import RepeatMemory
    from broker.policy.signing import TokenSigner
    from broker.store.policy_store import PolicyStore
    from broker.store.records import Challenge, DirectoryPolicyRecord, Location
    from pta.names import Upn

log = structlog.get_logger()
#: Re-exported: what callers of the policy deal in.
__all__ = [
    "MAX_COUNTERS",
    "MAX_WAITING_PER_USER",
    "REPEATED",
    "Attempt",
    "SignInPolicy",
    "Verdict",
    "threshold_warning",
    "user_key",
]
#: A familiar network's "last success" is rewritten at most this often.
FAMILIAR_REFRESH = 3600.0


def user_key(upn: Upn) -> str:
    """The typed name as the policy knows it: :func:`broker.policy.accounts.typed_key`.

    Kept for callers that want the token's subject; the policy's state is keyed per
    directory account (:class:`broker.policy.accounts.AccountMap`).
    """
    return typed_key(upn)


class SignInPolicy:
    """Lockout, MFA and tokens for every tenant."""

    def __init__(  # noqa: PLR0913 - wiring, and seams for tests
        self,
        store: PolicyStore,
        signer: TokenSigner,
        *,
        mfa_key: mfa.MfaKey | None = None,
        challenges: mfa.ChallengeBook | None = None,
        recent: RepeatMemory | None = None,
        clock: Callable[[], float] = time.time,
        accounts: AccountMap | None = None,
        max_counters: int | None = None,
        passwords: PasswordProtection | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        """Load the policies, counters, familiar networks and account rules from the store.

        ``max_counters`` (default :data:`MAX_COUNTERS`) bounds the counters of names no
        directory has said exist (see :class:`LockoutGate`). ``passwords``: the banned lists
        (read from the store and the package when omitted). ``ledger``: where the counters
        live (:mod:`broker.policy.lockout_ledger`; this process's memory when omitted).
        """
        self._store = store
        self.signer = signer
        self._clock = clock
        #: Counters, checks in flight, directory thresholds, the repeat memory.
        self.gate = LockoutGate(
            store, recent=recent, clock=clock, max_counters=max_counters, ledger=ledger
        )
        #: How each tenant's directories name accounts: what the policy keys users by.
        self.accounts = AccountMap(store) if accounts is None else accounts
        #: (tenant, agent id) -> the digests of that agent's directory settings, last hello.
        self._settings: dict[tuple[str, str], bytes] = {}
        self._policies: dict[str, TenantPolicy] = {}
        self._familiar: dict[tuple[str, str], dict[str, float]] = {}
        #: The banned-password lists, global and per tenant.
        self.passwords = PasswordProtection(store) if passwords is None else passwords
        #: The second factor: challenges, codes, secrets.
        self.mfa = SecondFactor(
            store,
            self.accounts,
            self.gate,
            self.policy_of,
            mfa_key=mfa_key,
            challenges=challenges,
            clock=clock,
        )
        self.reload()

    # State ------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read what the CLI may have changed: policies, counters, networks, banned lists."""
        policies = self._policies
        self._policies = self._store.tenant_policies()
        self.gate.reload()
        self._familiar = self._store.familiar()
        self.passwords.reload()
        for tenant, policy in self._policies.items():
            if policies.get(tenant) != policy:
                log.info("policy.changed", tenant=tenant, **policy.describe())
                self._check_thresholds(tenant)

    def agent_configured(
        self, tenant: str, agent_id: str, rules: Mapping[str, AccountRule], settings: bytes
    ) -> None:
        """Take what an agent's hello says of its directories, before its stream attaches.

        ``rules``: how each domain's names map to accounts (:class:`AccountMap`).
        ``settings``: the digests of its directories' settings. When an agent comes back with
        other settings than it had, the tenant's refused passwords are forgotten: what a broken
        configuration answered (a base DN with a typo finds nobody; a wrong login attribute
        finds someone else) must not keep refusing a right password once it is fixed.
        """
        self.accounts.record(tenant, agent_id, rules)
        before = self._settings.get((tenant, agent_id))
        self._settings[(tenant, agent_id)] = settings
        if before is not None and settings and before != settings:
            self.gate.recent.forget_tenant(tenant)
            log.info("policy.repeats_forgotten", tenant=tenant, agent_id=agent_id)

    @property
    def mfa_ready(self) -> bool:
        """Whether this broker can check second factors (it was given an MFA key)."""
        return self.mfa.ready

    def policy_of(self, tenant: str) -> TenantPolicy:
        """A tenant's policy (the defaults unless set)."""
        return self._policies.get(tenant) or _DEFAULT

    def upkeep(self) -> None:
        """Forget what no rule needs any more; rotate signing keys. Called now and then."""
        now = self._clock()
        self.gate.upkeep(self.policy_of)
        self.mfa.upkeep()
        tenants = {tenant for tenant, _ in self._familiar}
        for tenant in tenants:
            self._store.forget_familiar_before(tenant, now - self.policy_of(tenant).familiar_window)
        self._familiar = self._store.familiar()
        self.signer.rotate()

    # Before and after the directory's check --------------------------------------------------

    def password_refusal(self, tenant: str, upn: Upn, new_password: str) -> Verdict | None:
        """A password change's answer when its new password is banned; None otherwise.

        Asked before :meth:`begin`: the refusal needs nothing of the account (the old password
        is not checked), counts nothing and sends nothing, so a locked user is answered it too.
        """
        if not new_password:
            return None
        return self.passwords.refusal(tenant, upn, new_password)

    async def begin(
        self, tenant: str, upn: Upn, password: str, address: str, *, deadline: float
    ) -> Attempt | Verdict:
        """Decide whether a password may be checked at all.

        As many checks of one user run at once as may still fail before the lockout comes
        down (more could overshoot the threshold at the directory); further ones wait for
        those to be answered, and are then decided afresh: by then the user may be locked.

        Args:
            tenant: The user's organisation.
            upn: The user, as they typed it.
            password: The password, only to recognise one refused moments ago.
            address: Where the sign-in comes from.
            deadline: Event-loop time by which the sign-in must be answered.

        Returns:
            The attempt to pass to :meth:`end` once the directory answered, or the policy's
            own answer (locked out, or a password refused moments ago).

        Raises:
            DeadlineExceeded: When the deadline passes while earlier checks of the user run.
            Overloaded: When too many sign-ins of the user wait already.
        """
        policy = self.policy_of(tenant)
        user = self.accounts.key(tenant, upn)
        location = self._location(tenant, user, address, policy)
        attempt = Attempt(
            tenant=tenant,
            domain=upn.domain,
            user=user,
            subject=typed_key(upn),
            address=address,
            location=location,
            policy=policy,
        )
        if not policy.lockout.enabled:
            return attempt
        return await self.gate.admit(attempt, password, deadline) or attempt

    @contextlib.asynccontextmanager
    async def attempt(  # noqa: PLR0913 - one sign-in's facts, by name
        self,
        tenant: str,
        upn: Upn,
        password: str,
        address: str,
        *,
        deadline: float,
        new_password: str = "",
    ) -> AsyncIterator[Attempt | Verdict]:
        """Admit one check (:meth:`begin`) and make sure its accounting runs exactly once.

        A password change whose new password is banned is refused first
        (:meth:`password_refusal`): nothing admitted, counted or sent.

        The block checks an :class:`Attempt` through the dispatcher with :meth:`accounting`,
        or answers without one. On leaving, an attempt no agent was given (the policy answered
        itself, a wrong second factor, no agent, an error before dispatch) ends here, on the
        caller's task, with no answer. One handed to the dispatcher was settled on the
        caller's task when its answer came (or its agent was lost) while the caller waited;
        if the caller stopped waiting first, its job settles it when the agent answers: the
        directory counts that password whether or not anyone waits for it.
        """
        refusal = self.password_refusal(tenant, upn, new_password)
        if refusal is not None:
            yield refusal
            return
        admitted = await self.begin(tenant, upn, password, address, deadline=deadline)
        try:
            yield admitted
        finally:
            if isinstance(admitted, Attempt):
                if not admitted.dispatched:
                    self.end(admitted, None)
                if admitted.landing is not None:  # Counted before the caller hears it.
                    await asyncio.shield(admitted.landing)

    def accounting(
        self, attempt: Attempt
    ) -> tuple[Callable[[int | None], None], Callable[[float], Awaitable[bool]]]:
        """What the dispatcher reports each try of ``attempt`` to: its end, and readmission."""
        attempt.dispatched = True
        return functools.partial(self.end, attempt), functools.partial(self.readmit, attempt)

    async def readmit(self, attempt: Attempt, deadline: float) -> bool:
        """See :meth:`LockoutGate.readmit`: another agent may try a lost check, or not."""
        return await self.gate.readmit(attempt, deadline)

    def end(self, attempt: Attempt, outcome: int | None) -> None:
        """Count what the directory said (:meth:`LockoutGate.end`); a full success clears more.

        A right password is a full success unless a second factor is still to come (then
        :meth:`grant`'s challenge, once completed, is).
        """
        full = not self.mfa.wants(attempt)
        if self.gate.end(attempt, outcome, succeed=full) and full:
            try:
                self._network_familiar(attempt)
            except StoreUnavailable:
                log.warning("policy.network_not_recorded", tenant=attempt.tenant)

    def directory_reported(self, tenant: str, reports: Iterable[DirectoryPolicyRecord]) -> None:
        """Remember what an agent said of its directories' own lockout; warn when ours is late."""
        self.gate.thresholds.reported(tenant, reports)
        self._check_thresholds(tenant)

    def grant(self, attempt: Attempt, request_id: str) -> Verdict:
        """What a right password gets: a token, or an MFA challenge when the policy wants one.

        Raises:
            Unavailable: When a second factor is required but this broker has no MFA key.
        """
        if not self.mfa.wants(attempt):
            return self._token(attempt.tenant, attempt.subject, request_id, ("pwd",))
        return self.mfa.challenge(attempt, request_id)

    def complete(self, challenge_id: str, code: str) -> tuple[Verdict, Challenge]:
        """Check a second factor for an open challenge (:meth:`SecondFactor.complete`).

        A right code is a full success: the token, the network made familiar.

        Returns:
            The verdict, and the challenge it answers (tenant, user, the sign-in's request id).
        """
        verdict, challenge, attempt = self.mfa.complete(challenge_id, code)
        if verdict is None:
            self._succeed(attempt)
            verdict = self._token(
                challenge.tenant, challenge.subject, challenge.request_id, ("pwd", "otp")
            )
        return verdict, challenge

    def second_factor(self, attempt: Attempt, code: str) -> Verdict | None:
        """The code a password change carries (:meth:`SecondFactor.for_change`)."""
        return self.mfa.for_change(attempt, code)

    # Directory thresholds ---------------------------------------------------------------------

    def _check_thresholds(self, tenant: str) -> None:
        rule = self.policy_of(tenant).lockout
        for domain, threshold in sorted(self.gate.thresholds.lowest.get(tenant, {}).items()):
            if warning := threshold_warning(rule.threshold, threshold):
                log.warning(
                    "policy.threshold_not_below_directory",
                    tenant=tenant,
                    domain=domain,
                    broker_threshold=rule.threshold,
                    directory_threshold=threshold,
                    advice=warning,
                )

    # Internals --------------------------------------------------------------------------------

    def _location(self, tenant: str, user: str, address: str, policy: TenantPolicy) -> Location:
        if in_networks(address, policy.networks):
            return "familiar"
        learned = self._familiar.get((tenant, user))
        if not learned:
            return "unfamiliar"
        seen = learned.get(familiar_prefix(address) or "")
        if seen is not None and self._clock() - seen < policy.familiar_window:
            return "familiar"
        return "unfamiliar"

    def _succeed(self, attempt: Attempt) -> None:
        """A full success: clear the counter of its kind of location; the network is familiar.

        Only that kind's: the user signing in at the office must not hand someone guessing
        from elsewhere a fresh set of guesses.
        """
        key = (attempt.tenant, attempt.user, attempt.location)
        self.gate.succeed(key, f"{attempt.tenant}\0{attempt.user}")
        self._network_familiar(attempt)

    def _network_familiar(self, attempt: Attempt) -> None:
        """Remember the network of a full success (rewritten at most hourly)."""
        prefix = familiar_prefix(attempt.address)
        if prefix is None:
            return
        now = self._clock()
        networks = self._familiar.setdefault((attempt.tenant, attempt.user), {})
        if now - networks.get(prefix, float("-inf")) >= FAMILIAR_REFRESH:
            networks[prefix] = now
            self._store.save_familiar(attempt.tenant, attempt.user, prefix, now)

    def _token(
        self, tenant: str, subject: str, request_id: str, methods: tuple[str, ...]
    ) -> Verdict:
        issued = self.signer.issue(
            subject=subject, tenant=tenant, methods=list(methods), jti=request_id
        )
        return Verdict(
            outcome=Outcome.SUCCESS,
            message="signed in",
            decided_by="token",
            token=issued.token,
            token_expires_at=issued.expires_at,
            methods=methods,
        )


_DEFAULT = TenantPolicy()
