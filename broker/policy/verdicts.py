"""What a sign-in check is while it runs (:class:`Attempt`) and what the policy answers itself.

Shared by the lockout gate and the sign-in policy, so that neither imports the other's module
for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pta.v1 import outcome_pb2

if TYPE_CHECKING:
    import asyncio

    from broker.policy.tenant_policy import TenantPolicy
    from broker.store.records import Location

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
        Outcome.CHANGE_REFUSED,
    }
)


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
    #: The id its admission was recorded under as in flight (see the lockout gate).
    flight: str = ""
    #: Handed to the dispatcher: from then on each try is settled by its job, exactly once.
    dispatched: bool = False
    #: Its accounting while a thread writes it to a shared store (see :meth:`Ledger.later`):
    #: the caller hears the answer once it is written.
    landing: asyncio.Future[None] | None = None


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


#: The answer to a password refused moments ago: not counted, not sent again.
REPEATED = Verdict(
    outcome=Outcome.INVALID_CREDENTIALS, message="wrong username or password", decided_by="repeat"
)


def locked(wait: float) -> Verdict:
    """The broker's own lockout: wait ``wait`` seconds."""
    seconds = max(1, int(wait + 0.999))
    return Verdict(
        outcome=Outcome.LOCKED_BY_POLICY,
        message=f"too many failed attempts: try again in {seconds} s",
        decided_by="lockout",
        retry_after=seconds,
    )


def guarded(wait: float) -> Verdict:
    """The directory guard: one more wrong password would lock the account on premises."""
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
