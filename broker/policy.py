"""The broker's sign-in policy: smart lockout before a check, MFA and a token after it.

``begin`` runs before anything is sealed: a user locked out from this kind of location, or a
password that was refused for this user moments ago, is answered here and reaches no agent
and no directory. ``end`` counts what the directory said (only wrong passwords count; an
outage, a timeout or a refused envelope never does). ``grant`` turns a right password into
either a token or, when the tenant wants a second factor, an MFA challenge, which
``complete`` finishes.

Counters and familiar networks live in memory for the hot path and are written through to
the store (so they survive a restart); the store is re-read when the CLI changed it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from broker import lockout, mfa
from broker.accounts import AccountMap, typed_key
from broker.dispatch import MAY_HAVE_TRIED
from broker.policy_store import LOCATIONS
from broker.recent_failures import RecentFailures, Repeat
from broker.tenant_policy import TenantPolicy, familiar_prefix, in_networks
from pta.errors import (
    ChallengeExpired,
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
    Unavailable,
)
from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from broker.accounts import AccountRule
    from broker.policy_store import CounterKey, Location, MfaRecord, PolicyStore
    from broker.signing import TokenSigner
    from broker.store import DirectoryPolicyRecord
    from pta.names import Upn

log = structlog.get_logger()
Outcome = outcome_pb2.Outcome
#: Answers that prove the password right (the directory checks it before saying these).
PASSWORD_RIGHT = frozenset(
    {Outcome.SUCCESS, Outcome.PASSWORD_EXPIRED, Outcome.PASSWORD_MUST_CHANGE}
)
#: Answers that count as a wrong guess (an unknown user looks exactly like a wrong password).
WRONG = frozenset({Outcome.INVALID_CREDENTIALS, Outcome.UNKNOWN_USER})
#: Answers a directory gives only about an account it has: its counters are never shed.
ACCOUNT_EXISTS = frozenset(
    {
        Outcome.SUCCESS,
        Outcome.INVALID_CREDENTIALS,
        Outcome.PASSWORD_EXPIRED,
        Outcome.PASSWORD_MUST_CHANGE,
        Outcome.ACCOUNT_LOCKED,
        Outcome.ACCOUNT_DISABLED,
        Outcome.ACCOUNT_EXPIRED,
        Outcome.ACCOUNT_RESTRICTED,
        Outcome.PASSWORD_REJECTED,
    }
)
#: A familiar network's "last success" is rewritten at most this often.
FAMILIAR_REFRESH = 3600.0
#: Sign-ins of one user waiting their turn; more are refused (each wake-up wakes them all).
MAX_WAITING_PER_USER = 32
#: Counters kept of accounts no directory said exist; past this the oldest are forgotten.
MAX_COUNTERS = 200_000
MAX_CHALLENGE_ID_CHARS = 64


def user_key(upn: Upn) -> str:
    """The typed name as the policy knows it: :func:`broker.accounts.typed_key`.

    Kept for callers that want the token's subject; the policy's state is keyed per
    directory account (:class:`broker.accounts.AccountMap`).
    """
    return typed_key(upn)


@dataclass(slots=True, kw_only=True)
class Attempt:
    """A credential check the policy let through, until :meth:`SignInPolicy.end`."""

    tenant: str
    domain: str
    user: str
    subject: str
    address: str
    location: Location
    policy: TenantPolicy
    #: Keyed hash of the password, remembered if the directory refuses it.
    digest: bytes = b""
    #: A right TOTP code came with it (a password change under an MFA policy).
    second_factor: bool = False
    #: The password was refused moments ago as an unknown name: checked again, not counted
    #: again unless the directory now answers otherwise.
    recheck: bool = False
    ended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The policy's own answer: a refusal before the check, or what a right password gets."""

    outcome: int
    message: str
    #: Why the policy answered (audit): lockout, repeat, mfa, token.
    decided_by: str
    retry_after: int = 0
    token: str = ""
    token_expires_at: int = 0
    challenge_id: str = field(default="", repr=False)
    challenge_ttl: int = 0
    methods: tuple[str, ...] = ()


class SignInPolicy:
    """Lockout, MFA and tokens for every tenant."""

    def __init__(  # noqa: PLR0913 - wiring, and seams for tests
        self,
        store: PolicyStore,
        signer: TokenSigner,
        *,
        mfa_key: mfa.MfaKey | None = None,
        challenges: mfa.Challenges | None = None,
        recent: RecentFailures | None = None,
        clock: Callable[[], float] = time.time,
        accounts: AccountMap | None = None,
        max_counters: int | None = None,
    ) -> None:
        """Load the policies, counters, familiar networks and account rules from the store.

        ``max_counters`` (default :data:`MAX_COUNTERS`) bounds the counters of names no
        directory has said exist (see :meth:`_shed`).
        """
        self._store = store
        self.signer = signer
        self._mfa_key = mfa_key
        # Not `or`: both have a length, and an empty one is falsy.
        self._challenges = mfa.Challenges() if challenges is None else challenges
        self._recent = RecentFailures() if recent is None else recent
        self._clock = clock
        #: How each tenant's directories name accounts: what the policy keys users by.
        self.accounts = AccountMap(store) if accounts is None else accounts
        #: (tenant, agent id) -> the digests of that agent's directory settings, last hello.
        self._settings: dict[tuple[str, str], bytes] = {}
        self._max_counters = MAX_COUNTERS if max_counters is None else max_counters
        self._shed_above = self._max_counters
        #: (tenant, account) a directory answered for lately: their counters are never shed.
        self._known = store.known_accounts()
        self._pending: dict[CounterKey, int] = {}
        self._waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}
        self._policies: dict[str, TenantPolicy] = {}
        self._counters: dict[CounterKey, lockout.Counter] = {}
        self._familiar: dict[tuple[str, str], dict[str, float]] = {}
        #: tenant -> domain -> the lowest threshold its agents reported (0: known never to lock;
        #: absent: unknown); and each report.
        self._directory: dict[str, dict[str, int]] = {}
        self._reports: dict[str, dict[tuple[str, str], int]] = {}
        self.reload()

    # State ------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read what the CLI may have changed: policies, counters (an unlock), networks."""
        before, policies = set(self._counters), self._policies
        self._policies = self._store.tenant_policies()
        self._counters = self._store.counters()
        self._familiar = self._store.familiar()
        for tenant, user in sorted({(t, u) for t, u, _ in before - set(self._counters)}):
            self._recent.forget(f"{tenant}\0{user}")
            log.info("lockout.cleared", tenant=tenant, user=user)
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
            self._recent.forget_tenant(tenant)
            log.info("policy.repeats_forgotten", tenant=tenant, agent_id=agent_id)

    @property
    def mfa_ready(self) -> bool:
        """Whether this broker can check second factors (it was given an MFA key)."""
        return self._mfa_key is not None

    def policy_of(self, tenant: str) -> TenantPolicy:
        """A tenant's policy (the defaults unless set)."""
        return self._policies.get(tenant) or _DEFAULT

    def upkeep(self) -> None:
        """Forget what no rule needs any more; rotate signing keys. Called now and then."""
        now = self._clock()
        self._store.forget_counters_before(now - lockout.FORGET_AFTER)
        self._counters = {
            key: c
            for key, c in self._counters.items()
            if lockout.current(c, self.policy_of(key[0]).lockout, now) is c
        }
        self._store.forget_known_accounts_before(now - lockout.FORGET_AFTER)
        self._known = self._store.known_accounts()
        self._shed_above = max(self._max_counters, len(self._counters) + self._max_counters // 10)
        tenants = {tenant for tenant, _ in self._familiar}
        for tenant in tenants:
            self._store.forget_familiar_before(tenant, now - self.policy_of(tenant).familiar_window)
        self._familiar = self._store.familiar()
        self.signer.rotate()

    # Before and after the directory's check --------------------------------------------------

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
        return await self._admit(attempt, password, deadline) or attempt

    async def readmit(self, attempt: Attempt, deadline: float) -> bool:
        """Let an attempt whose agent was lost after it may have tried it go to another agent.

        :meth:`end` counted the lost try as one the directory may have seen. The second try
        is admitted like a new check of the user: when the lost one and every other check in
        flight, all wrong, would still leave the directory one short of its lockout; it waits
        while other checks of the user run (each may free room: a right password starts the
        directory's count again). Never when the directory's threshold is unknown.

        Returns:
            True once admitted (end it again with :meth:`end`); False when there is no room
            (or the user is locked now), or nothing bounds a second try.

        Raises:
            DeadlineExceeded: When the deadline passes while other checks of the user run.
            Overloaded: When too many sign-ins of the user wait already.
        """
        rule = attempt.policy.lockout
        if not rule.enabled or attempt.domain not in self._directory.get(attempt.tenant, {}):
            return False
        if await self._admit(attempt, None, deadline) is not None:
            return False
        attempt.ended = False
        return True

    async def _admit(
        self, attempt: Attempt, password: str | None, deadline: float
    ) -> Verdict | None:
        """Wait for the attempt's turn; None once admitted (counted in flight), or the refusal.

        ``password`` is looked up in the repeat memory (None: not again, a retried check).
        """
        tenant, user, rule = attempt.tenant, attempt.user, attempt.policy.lockout
        key: CounterKey = (tenant, user, attempt.location)
        budget = self._directory_budget(tenant, attempt.domain, attempt.location)
        while True:
            now = self._clock()
            counter = lockout.current(self._counters.get(key, lockout.CLEAN), rule, now)
            if (wait := lockout.locked_for(counter, now)) > 0:
                return _locked(wait)
            seen = Repeat.NO
            if password is not None:  # (None: a readmission, which keeps what was found.)
                seen, attempt.digest = self._recent.check(f"{tenant}\0{user}", password)
                # Refused as an unknown name: asked again (a misconfigured directory may have
                # said so), counted only if the answer differs (see end).
                attempt.recheck = seen == Repeat.UNKNOWN_NAME
            pending = self._pending.get(key, 0)
            in_flight = sum(self._pending.get((tenant, user, kind), 0) for kind in LOCATIONS)
            sent = lockout.current(
                self._counters.get((tenant, user, "directory"), lockout.CLEAN), rule, now
            )
            full = budget is not None and sent.failures + in_flight >= budget
            # A repeat is answered here, as ever; one refused as an unknown name is asked again
            # only while the guard has room (the name may exist by now), never refused by it.
            if seen == Repeat.REFUSED or (attempt.recheck and full):
                return REPEATED
            if full:
                if not in_flight:
                    return _guarded(sent.last_failure + rule.forget_after - now)
            elif pending < lockout.attempts_left(counter, rule):
                self._pending[key] = pending + 1
                return None
            await self._wait_turn((tenant, user), deadline)

    async def _wait_turn(self, key: tuple[str, str], deadline: float) -> None:
        """Wait until a check of the user ``key`` (tenant, user) is answered.

        Raises:
            DeadlineExceeded: When ``deadline`` (event-loop time) passes first.
            Overloaded: When too many wait for this user already.
        """
        waiters = self._waiters.setdefault(key, [])
        if len(waiters) >= MAX_WAITING_PER_USER:
            raise Overloaded("too many sign-ins of this user at once; try again")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except TimeoutError:
            raise DeadlineExceeded("earlier sign-ins of this user took too long") from None
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

    def end(self, attempt: Attempt, outcome: int | None) -> None:
        """Count what the directory said about an attempt (``None``: no answer at all).

        Only wrong passwords count; answers that prove the password right clear the counter
        unless a second factor is still to come (then :meth:`grant`'s success does).
        :data:`~broker.dispatch.MAY_HAVE_TRIED` (the agent was lost after it may have tried
        the password) counts toward the directory guard only: the directory may have seen a
        wrong password; the user's own lockout and the repeat memory learn nothing from it.
        """
        if attempt.ended:
            return
        attempt.ended = True
        rule = attempt.policy.lockout
        if not rule.enabled:
            return
        self._confirm(attempt.tenant, attempt.user, outcome)
        key = (attempt.tenant, attempt.user, attempt.location)
        pending = self._pending.pop(key, 1) - 1
        if pending > 0:
            self._pending[key] = pending
        for waiter in self._waiters.pop((attempt.tenant, attempt.user), ()):
            if not waiter.done():
                waiter.set_result(None)
        sent_key: CounterKey = (attempt.tenant, attempt.user, "directory")
        if outcome in WRONG or outcome == MAY_HAVE_TRIED:
            self._count_wrong(attempt, outcome, key)
        elif outcome in PASSWORD_RIGHT:
            # The directory just took a password: its own count of failures starts again, and
            # one refused before may be the new one (a user who tried it, then changed to it).
            self._recent.forget(f"{attempt.tenant}\0{attempt.user}")
            self._save(sent_key, lockout.CLEAN)
            if not self._wants_mfa(attempt):
                self._succeed(attempt)

    def _count_wrong(self, attempt: Attempt, outcome: int, key: CounterKey) -> None:
        """A wrong password, an unknown name, or a lost try that may have been either."""
        if attempt.recheck and outcome == Outcome.UNKNOWN_USER:
            return  # The same answer to the same password: not a new guess, as any repeat.
        rule = attempt.policy.lockout
        if outcome != MAY_HAVE_TRIED:  # A lost try says nothing of the password.
            known = outcome != Outcome.UNKNOWN_USER
            self._recent.add(f"{attempt.tenant}\0{attempt.user}", attempt.digest, known=known)
            self._fail(key, rule)
        sent_key: CounterKey = (attempt.tenant, attempt.user, "directory")
        now = self._clock()
        sent = lockout.current(self._counters.get(sent_key, lockout.CLEAN), rule, now)
        self._save(sent_key, lockout.Counter(failures=sent.failures + 1, last_failure=now))

    def grant(self, attempt: Attempt, request_id: str) -> Verdict:
        """What a right password gets: a token, or an MFA challenge when the policy wants one.

        Raises:
            Unavailable: When a second factor is required but this broker has no MFA key.
        """
        if not self._wants_mfa(attempt):
            return self._token(attempt.tenant, attempt.subject, request_id, ("pwd",))
        if self._mfa_record(attempt.tenant, attempt.subject) is None:
            return Verdict(
                outcome=Outcome.MFA_NOT_ENROLLED,
                message="a second factor is required and none is enrolled: ask your administrator",
                decided_by="mfa",
            )
        if self._mfa_key is None:
            log.error("mfa.no_key", tenant=attempt.tenant, fix="serve with --mfa-key-file")
            raise Unavailable("a second factor is required but cannot be checked now")
        challenge_id = self._challenges.open(
            tenant=attempt.tenant,
            user=attempt.user,
            subject=attempt.subject,
            address=attempt.address,
            location=attempt.location,
            request_id=request_id,
        )
        return Verdict(
            outcome=Outcome.MFA_REQUIRED,
            message="enter the code from your authenticator app",
            decided_by="mfa",
            challenge_id=challenge_id,
            challenge_ttl=int(self._challenges.ttl),
        )

    def complete(self, challenge_id: str, code: str) -> tuple[Verdict, mfa.Challenge]:
        """Check a second factor for an open challenge.

        A wrong (or already used) code counts toward the lockout like a wrong password; the
        challenge stays open for its few remaining tries, and closes on anything else.

        Returns:
            The verdict, and the challenge it answers (tenant, user, the sign-in's request id).

        Raises:
            InvalidRequest: When the id or the code is malformed.
            ChallengeExpired: When the challenge is unknown, expired or used up.
            Unavailable: When the broker cannot open the user's secret (no or another key).
        """
        if not challenge_id or len(challenge_id) > MAX_CHALLENGE_ID_CHARS:
            raise InvalidRequest("challenge_id is missing or too long")
        if not mfa.well_formed_code(code):
            raise InvalidRequest("the code is six digits")
        challenge = self._challenges.get(challenge_id)
        if challenge is None:
            raise ChallengeExpired("this sign-in has expired or was used up: sign in again")
        verdict = self._check_code(challenge, code)
        if verdict.outcome != Outcome.INVALID_CREDENTIALS or challenge.attempts_left <= 0:
            self._challenges.close(challenge_id)
        return verdict, challenge

    def second_factor(self, attempt: Attempt, code: str) -> Verdict | None:
        """Check the code a password change carries, when the policy wants one here.

        A change of password is an account takeover if a stolen password is enough, so it
        needs the same second factor a sign-in would; the code comes with the change itself
        (nothing waits between two calls, no password is held), and is checked before the
        old password reaches the directory.

        Returns:
            None to go ahead (no code wanted, or the right one: its step is spent), else the
            answer: MFA_REQUIRED without a code, a wrong code (counted), locked, not enrolled.

        Raises:
            InvalidRequest: When the code is not six digits.
            Unavailable: When the broker cannot open the user's secret.
        """
        if not self._wants_mfa(attempt):
            return None
        if not code:
            return Verdict(
                outcome=Outcome.MFA_REQUIRED,
                message="changing the password needs the code from your authenticator app",
                decided_by="mfa",
            )
        if not mfa.well_formed_code(code):
            raise InvalidRequest("the code is six digits")
        verdict = self._verify_code(attempt, code)
        if verdict is None:
            attempt.second_factor = True
        return verdict

    def _check_code(self, challenge: mfa.Challenge, code: str) -> Verdict:
        attempt = Attempt(
            tenant=challenge.tenant,
            domain="",
            user=challenge.user,
            subject=challenge.subject,
            address=challenge.address,
            location=challenge.location,
            policy=self.policy_of(challenge.tenant),
        )
        verdict = self._verify_code(attempt, code)
        if verdict is None:
            self._succeed(attempt)
            return self._token(
                challenge.tenant, challenge.subject, challenge.request_id, ("pwd", "otp")
            )
        if verdict.outcome != Outcome.INVALID_CREDENTIALS:
            return verdict
        challenge.attempts_left -= 1
        left = (
            f"{challenge.attempts_left} more tries" if challenge.attempts_left else "sign in again"
        )
        return replace(verdict, message=f"{verdict.message} ({left})")

    def _verify_code(self, attempt: Attempt, code: str) -> Verdict | None:
        """None when ``code`` is right (its time step is then spent); else the answer.

        A wrong or already used code counts toward the lockout like a wrong password.
        """
        tenant = attempt.tenant
        rule = self.policy_of(tenant).lockout
        key = (tenant, attempt.user, attempt.location)
        now = self._clock()
        counter = lockout.current(self._counters.get(key, lockout.CLEAN), rule, now)
        if (wait := lockout.locked_for(counter, now)) > 0:
            return _locked(wait)
        found = self._mfa_record(tenant, attempt.subject)
        if found is None:
            return Verdict(
                outcome=Outcome.MFA_NOT_ENROLLED,
                message="a second factor is required and none is enrolled: ask your administrator",
                decided_by="mfa",
            )
        enrolled_as, record = found
        secret = self._secret(tenant, enrolled_as, record.sealed)
        step = mfa.matching_step(secret, code, now, after=record.last_step)
        if step is not None and self._store.use_mfa_step(tenant, enrolled_as, step):
            return None
        counter = self._fail(key, rule)
        if (wait := lockout.locked_for(counter, now)) > 0:
            return _locked(wait)
        return Verdict(
            outcome=Outcome.INVALID_CREDENTIALS,
            message="wrong or already used code",
            decided_by="mfa",
        )

    def _mfa_record(self, tenant: str, typed: str) -> tuple[str, MfaRecord] | None:
        """The authenticator of the account behind a typed key, and the key it is under.

        Enrolment (``pta-broker mfa enroll``) keys it on the account; one enrolled before the
        agents said how their directory names accounts is under a typed name (this domain's
        first, then the directory's other domains'), and still counts: the secret is sealed
        to the key it was enrolled under, which is why that key is returned.
        """
        for key in self.accounts.keys(tenant, typed):
            if (record := self._store.mfa(tenant, key)) is not None:
                return key, record
        return None

    def _secret(self, tenant: str, user: str, sealed: bytes) -> bytes:
        """Open a user's TOTP secret for one check; it is not kept.

        Raises:
            Unavailable: When this broker has no MFA key, or not the one it was sealed with.
        """
        unavailable = Unavailable("a second factor is required but cannot be checked now")
        if self._mfa_key is None:
            log.error("mfa.no_key", tenant=tenant, fix="serve with --mfa-key-file")
            raise unavailable
        try:
            return self._mfa_key.open(sealed, tenant, user)
        except mfa.MfaKeyError:
            log.exception("mfa.cannot_open_secret", tenant=tenant, user=user)
            raise unavailable from None

    # Directory thresholds ---------------------------------------------------------------------

    def directory_reported(self, tenant: str, reports: Iterable[DirectoryPolicyRecord]) -> None:
        """Remember what an agent said of its directories' own lockout; warn when ours is late."""
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
        self._directory[tenant] = {
            domain: lowest
            for domain, thresholds in said.items()
            if (lowest := lockout.lowest_threshold(thresholds)) is not None
        }
        self._check_thresholds(tenant)

    def _check_thresholds(self, tenant: str) -> None:
        rule = self.policy_of(tenant).lockout
        for domain, threshold in sorted(self._directory.get(tenant, {}).items()):
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

    def _wants_mfa(self, attempt: Attempt) -> bool:
        if attempt.second_factor:
            return False
        mode = attempt.policy.mfa
        return mode == "always" or (mode == "unfamiliar" and attempt.location == "unfamiliar")

    def _save(self, key: CounterKey, counter: lockout.Counter) -> None:
        """Keep a counter in memory and in the store (a clean one is forgotten in both)."""
        if counter.clean:
            if self._counters.pop(key, None) is not None:
                self._store.save_counter(key, counter)
            return
        self._counters[key] = counter
        self._store.save_counter(key, counter)
        if len(self._counters) > self._shed_above:
            self._shed()

    def _shed(self) -> None:
        """Forget the oldest counters of names no directory said exist: memory stays bounded.

        Only a flood of distinct names gets here (each wrong one costs a counter for a day;
        ``--rate-limit`` keeps it from getting here at all). Counters of an account a
        directory answered for (:data:`ACCOUNT_EXISTS`) are never shed, whatever they hold:
        a flood of made-up names must not hand a victim a fresh count. There are no more of
        them than the directories have accounts, which no caller can add to. The others are
        bounded: past ``max_counters`` in all, they are shed down to nine tenths of it,
        unlocked ones first (least recently failing first), then locked ones (soonest to run
        out first); when the known accounts alone fill the table, the next shed waits for a
        tenth more. Answers do not change: an unknown name is still counted, and locked, as
        a real one until shed.
        """
        drop = lockout.to_shed(
            self._counters,
            protected=self._known,
            now=self._clock(),
            keep=self._max_counters - self._max_counters // 10,
        )
        for key in drop:
            del self._counters[key]
            self._store.save_counter(key, lockout.CLEAN)
        self._shed_above = max(self._max_counters, len(self._counters) + self._max_counters // 10)
        log.warning("lockout.counters_shed", shed=len(drop), kept=len(self._counters))

    def _confirm(self, tenant: str, user: str, outcome: int | None) -> None:
        """Remember an account a directory answered for: its counters are never shed."""
        if outcome in ACCOUNT_EXISTS and (tenant, user) not in self._known:
            self._known.add((tenant, user))
            self._store.add_known_account(tenant, user, self._clock())

    def _directory_budget(self, tenant: str, domain: str, location: Location) -> int | None:
        """How many wrong passwords may be in the directory's count at once (None: unknown)."""
        threshold = self._directory.get(tenant, {}).get(domain)
        return lockout.directory_budget(threshold, unfamiliar=location == "unfamiliar")

    def _fail(self, key: CounterKey, rule: lockout.LockoutRule) -> lockout.Counter:
        now = self._clock()
        before = self._counters.get(key, lockout.CLEAN)
        counter = lockout.fail(before, rule, now)
        if counter is before:
            return counter
        self._save(key, counter)
        if counter.lockouts > before.lockouts:
            log.warning(
                "lockout.locked",
                tenant=key[0],
                user=key[1],
                location=key[2],
                failures=counter.failures,
                seconds=round(counter.locked_until - now),
            )
        return counter

    def _succeed(self, attempt: Attempt) -> None:
        """A full success: clear the counter of its kind of location; the network is familiar.

        Only that kind's: the user signing in at the office must not hand someone guessing
        from elsewhere a fresh set of guesses.
        """
        self._save((attempt.tenant, attempt.user, attempt.location), lockout.CLEAN)
        self._recent.forget(f"{attempt.tenant}\0{attempt.user}")
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
#: The answer to a password refused moments ago: not counted, not sent again.
REPEATED = Verdict(
    outcome=Outcome.INVALID_CREDENTIALS, message="wrong username or password", decided_by="repeat"
)


def _locked(wait: float) -> Verdict:
    seconds = max(1, int(wait + 0.999))
    return Verdict(
        outcome=Outcome.LOCKED_BY_POLICY,
        message=f"too many failed attempts: try again in {seconds} s",
        decided_by="lockout",
        retry_after=seconds,
    )


def _guarded(wait: float) -> Verdict:
    seconds = max(1, int(wait + 0.999))
    return Verdict(
        outcome=Outcome.LOCKED_BY_POLICY,
        message=(
            "too many failed attempts: one more would lock the account in the organisation's"
            " directory; try again later, or ask an administrator"
        ),
        decided_by="directory_guard",
        retry_after=seconds,
    )


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
