"""The second factor: when a tenant wants one, the challenge a right password gets, and codes.

A code is a TOTP (RFC 6238) checked against the user's secret, sealed at rest under the
operator's MFA key and opened only for one check. A wrong or already used code counts toward
the lockout like a wrong password (through the lockout gate), and a locked user's code is not
even looked at. A password change under an MFA policy carries its code with it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from broker.metrics import OFF, outcome_label
from broker.policy import mfa
from broker.policy.verdicts import Attempt, Outcome, Verdict, locked
from pta.errors import ChallengeExpired, InvalidRequest, Unavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.metrics import Counts
    from broker.policy.accounts import AccountMap
    from broker.policy.lockout_gate import LockoutGate
    from broker.policy.tenant_policy import TenantPolicy
    from broker.store.policy_store import PolicyStore
    from broker.store.records import Challenge, MfaRecord

log = structlog.get_logger()
MAX_CHALLENGE_ID_CHARS = 64


class SecondFactor:
    """Challenges and codes for every tenant."""

    def __init__(  # noqa: PLR0913 - wiring
        self,
        store: PolicyStore,
        accounts: AccountMap,
        gate: LockoutGate,
        policy_of: Callable[[str], TenantPolicy],
        *,
        mfa_key: mfa.MfaKey | None = None,
        challenges: mfa.ChallengeBook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wire it to the store (secrets, used steps), the accounts and the lockout gate."""
        self._store = store
        self.accounts = accounts
        self._gate = gate
        self._policy_of = policy_of
        self._mfa_key = mfa_key
        # Not `or`: both have a length, and an empty one is falsy.
        self._challenges: mfa.ChallengeBook = mfa.Challenges() if challenges is None else challenges
        self._clock = clock
        #: Where codes checked are counted for operators (the broker's metrics, when on).
        self.metrics: Counts = OFF

    @property
    def ready(self) -> bool:
        """Whether this broker can check second factors (it was given an MFA key)."""
        return self._mfa_key is not None

    @property
    def key(self) -> mfa.MfaKey | None:
        """The key new authenticators are sealed with (the AdminService enrols with it)."""
        return self._mfa_key

    def upkeep(self) -> None:
        """Forget expired challenges."""
        self._challenges.upkeep()

    def challenge(self, attempt: Attempt, request_id: str) -> Verdict:
        """What a right password gets when a second factor is wanted: a challenge to complete.

        Raises:
            Unavailable: When a second factor is required but this broker has no MFA key.
        """
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

    def complete(self, challenge_id: str, code: str) -> tuple[Verdict | None, Challenge, Attempt]:
        """Check a second factor for an open challenge.

        A wrong (or already used) code counts toward the lockout like a wrong password; the
        challenge stays open for its few remaining tries, and closes on anything else.

        Returns:
            None when the code is right (the caller grants the token), else the answer; the
            challenge it answers (tenant, user, the sign-in's request id); and the attempt it
            stands for.

        Raises:
            InvalidRequest: When the id or the code is malformed.
            ChallengeExpired: When the challenge is unknown, expired or used up.
            Unavailable: When the broker cannot open the user's secret (no or another key).
        """
        if not challenge_id or len(challenge_id) > MAX_CHALLENGE_ID_CHARS:
            raise InvalidRequest("challenge_id is missing or too long")
        if not mfa.well_formed_code(code):
            raise InvalidRequest("the code is six digits")
        challenge = self._challenges.spend(challenge_id)
        if challenge is None:
            raise ChallengeExpired("this sign-in has expired or was used up: sign in again")
        attempt, verdict = self._check_code(challenge, code)
        if (
            verdict is None
            or verdict.outcome != Outcome.INVALID_CREDENTIALS
            or challenge.attempts_left <= 0
        ):
            self._challenges.close(challenge_id)
        return verdict, challenge, attempt

    def for_change(self, attempt: Attempt, code: str) -> Verdict | None:
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
        if not self.wants(attempt):
            return None
        if not code:
            return Verdict(
                outcome=Outcome.MFA_REQUIRED,
                message="changing the password needs the code from your authenticator app",
                decided_by="mfa",
            )
        if not mfa.well_formed_code(code):
            raise InvalidRequest("the code is six digits")
        verdict = self.verify(attempt, code)
        if verdict is None:
            attempt.second_factor = True
        return verdict

    def _check_code(self, challenge: Challenge, code: str) -> tuple[Attempt, Verdict | None]:
        attempt = Attempt(
            tenant=challenge.tenant,
            domain="",
            user=challenge.user,
            subject=challenge.subject,
            address=challenge.address,
            location=challenge.location,
            policy=self._policy_of(challenge.tenant),
        )
        verdict = self.verify(attempt, code)
        if verdict is None or verdict.outcome != Outcome.INVALID_CREDENTIALS:
            return attempt, verdict
        left = (
            f"{challenge.attempts_left} more tries" if challenge.attempts_left else "sign in again"
        )
        return attempt, replace(verdict, message=f"{verdict.message} ({left})")

    def verify(self, attempt: Attempt, code: str) -> Verdict | None:
        """None when ``code`` is right (its time step is then spent); else the answer.

        A wrong or already used code counts toward the lockout like a wrong password. Counted
        for operators: OK, or the answer's name.
        """
        verdict = self._verify(attempt, code)
        self.metrics.mfa(
            attempt.tenant, "OK" if verdict is None else outcome_label(verdict.outcome)
        )
        return verdict

    def _verify(self, attempt: Attempt, code: str) -> Verdict | None:
        tenant = attempt.tenant
        rule = self._policy_of(tenant).lockout
        key = (tenant, attempt.user, attempt.location)
        now = self._clock()
        if (wait := self._gate.locked_for(key, rule)) > 0:
            return locked(wait)
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
        self._gate.fail(key, rule)
        if (wait := self._gate.locked_for(key, rule)) > 0:
            return locked(wait)
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

    def wants(self, attempt: Attempt) -> bool:
        """Whether the tenant wants a second factor for this attempt (not given yet)."""
        if attempt.second_factor:
            return False
        mode = attempt.policy.mfa
        return mode == "always" or (mode == "unfamiliar" and attempt.location == "unfamiliar")
