"""What the broker keeps, as values: the records every store implementation reads and writes.

The protocols (:mod:`broker.store.protocols`) speak these; the SQLite and PostgreSQL
implementations (:mod:`broker.store.sqlite`, :mod:`broker.store.postgres`) map them to rows.
Nothing here knows SQL or holds a secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pta.errors import InvalidRequest

if TYPE_CHECKING:
    from broker.policy.lockout import Counter

#: What a serving broker reports (streams, status) is stale after this many seconds: each
#: reports every second, so older means it stopped without saying so.
STATUS_FRESHNESS = 5.0

#: One message for every unusable token, so a guesser learns nothing.
TOKEN_REFUSED = "enrolment token is unknown, used or expired"  # noqa: S105 - a message

_TENANT = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

Location = Literal["familiar", "unfamiliar"]

LOCATIONS: tuple[Location, ...] = ("familiar", "unfamiliar")

#: What a counter counts: wrong answers from one kind of location, or ("directory") wrong
#: passwords sent to the directory since it last took one of the user's.
CounterKind = Literal["familiar", "unfamiliar", "directory"]

#: (tenant, user key, kind)
CounterKey = tuple[str, str, CounterKind]


@dataclass(frozen=True, slots=True)
class Flight:
    """A check of a user admitted toward the directory and not answered yet, at any broker."""

    location: Location
    #: Wall-clock time after which nobody will answer it: it then counts as a wrong password
    #: the directory may have seen (the broker that held it is gone).
    expires_at: float


@dataclass(frozen=True, slots=True)
class Refused:
    """A password lately refused for a user, kept by its keyed digest (the key apart)."""

    #: The directory refused it for an account it has (not "no such user").
    known: bool
    #: Wall-clock time after which it is no repeat any more.
    expires_at: float


@dataclass(slots=True)
class UserLockout:
    """One user's lockout state while its lock is held: what every broker's decision reads.

    Changed in place by the policy; the store writes what changed when the lock is let go.
    """

    #: By kind; a kind without a counter is clean.
    counters: dict[CounterKind, Counter]
    #: Checks in flight, by id.
    flights: dict[str, Flight]
    #: Passwords lately refused, by digest, as a shared store keeps them (expired ones too,
    #: until upkeep deletes them: the reader's clock decides). Read in the same transaction
    #: as the counters, so a decision costs no statement of its own for them.
    repeats: dict[bytes, Refused] = field(default_factory=dict)

    def copy(self) -> UserLockout:
        """A copy whose dicts may change without touching these."""
        return UserLockout(dict(self.counters), dict(self.flights), dict(self.repeats))


@dataclass(slots=True, kw_only=True)
class Challenge:
    """A right password waiting for its second factor (its id, a bearer secret, apart)."""

    tenant: str
    #: The user's lockout key and their UPN as they typed it (for the token's subject).
    user: str
    subject: str
    #: Where the password came from: a network that becomes familiar once the code is right.
    address: str
    location: Location
    request_id: str
    #: When the challenge is gone: monotonic time in memory, wall-clock time in a store.
    expires: float
    #: Codes it still takes (after the one being checked, once spent).
    attempts_left: int


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An enrolment token as listed to operators: never its secret, which is not kept."""

    token_id: str
    tenant: str
    created_at: float
    expires_at: float
    used_at: float | None


@dataclass(frozen=True, slots=True)
class ReportedPolicy:
    """What an agent says one domain's directory does with wrong passwords."""

    domain: str
    #: False when the agent could not read it: then the threshold says nothing (stored as 0).
    known: bool
    #: Failed binds after which the directory locks the account; 0 means never.
    lockout_threshold: int
    #: Where the agent read it, or why it could not, for operators.
    source: str


@dataclass(frozen=True, slots=True)
class DirectoryPolicyRecord:
    """A domain's directory lockout policy as one agent of the tenant last reported it."""

    tenant: str
    domain: str
    agent_id: str
    known: bool
    lockout_threshold: int
    source: str
    reported_at: float


def check_tenant_name(name: str) -> str:
    """Check a tenant name: it appears in certificate URIs, so it is kept to DNS-label form.

    Raises:
        InvalidRequest: When it is not a lower-case DNS label.
    """
    if not _TENANT.match(name):
        raise InvalidRequest(f"tenant names are lower-case DNS labels, not {name[:64]!r}")
    return name


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """What the broker knows about one agent certificate it issued."""

    serial: str
    agent_id: str
    tenant: str
    envelope_public_key: bytes
    not_after: float
    revoked: bool
    #: Replaced by a renewal that was used, or by a later renewal of its predecessor.
    retired: bool = False
    predecessor: str | None = None
    #: When it was issued (Unix time): with ``not_after``, how much of its life is left.
    issued_at: float = 0.0

    def refusal(self, now: float) -> str:
        """Why this certificate may not connect or renew now (``""`` when it may)."""
        if self.revoked:
            return "this agent has been revoked: enrol it again with a new token"
        if self.retired:
            return "this certificate was replaced by a renewal: the agent must use its newest"
        if self.not_after <= now:
            return "this agent certificate has expired: enrol the agent again with a new token"
        return ""


@dataclass(frozen=True, slots=True)
class BrokerRecord:
    """A broker serving the store, as it last said so (its heartbeat)."""

    broker_id: str
    #: Where agents dial it (``host:port``), and where clients do.
    agent_endpoint: str
    public_endpoint: str
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """A live stream as the broker holding it last reported it."""

    connection_id: str
    agent_id: str
    version: str
    serial: str
    domains: list[str]
    connected_at: float
    last_seen: float
    in_flight: int
    #: The broker holding the stream: the store fills it in from the report it came in.
    broker_id: str = ""
    #: The agent's last health report on this stream, as JSON (:mod:`broker.api.agent_health`);
    #: empty until one came (or from an agent too old to send one).
    health: str = ""


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An enrolled agent, its usable certificates (oldest first) and its live streams."""

    agent_id: str
    tenant: str
    hostname: str
    version: str
    enrolled_at: float
    revoked_at: float | None
    #: (serial, not_after) of every certificate that can still connect: unexpired, not retired.
    certificates: list[tuple[str, float]]
    connections: list[ConnectionStatus]


@dataclass(frozen=True, slots=True)
class MfaRecord:
    """A user's enrolled TOTP authenticator, its secret still sealed."""

    sealed: bytes
    #: The last TOTP time step accepted: a code of it or an earlier one never works again.
    last_step: int
    enrolled_at: float


@dataclass(frozen=True, slots=True)
class AdministratorRecord:
    """A certificate issued to an administrator (``pta-broker admin issue``) and its state."""

    name: str
    serial: str
    issued_at: float
    not_after: float
    revoked_at: float | None

    def refusal(self, now: float) -> str:
        """Why this certificate may not call the AdminService now; empty when it may."""
        if self.revoked_at is not None:
            return f"administrator {self.name} was revoked"
        if self.not_after <= now:
            return f"this certificate of administrator {self.name} has expired: issue a new one"
        return ""
