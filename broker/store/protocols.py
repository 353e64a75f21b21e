"""What the broker persists, by aggregate: the seam every store implementation fills.

The use case, the policy, dispatch and trust are typed against these protocols, never against
an implementation; :func:`broker.store.open_store` picks one: SQLite in the data directory
(:mod:`broker.store.sqlite`, one broker) or PostgreSQL shared by several brokers
(:mod:`broker.store.postgres`). Each method states what a caller may rely on, in particular
what must happen atomically, since several processes write one store (brokers and the CLI):
an implementation keeps these promises however it is built. The sign-in policy's own state is
:class:`~broker.store.policy_store.PolicyStore`. Calls are synchronous and short
(one statement or one transaction). A shared store that cannot be reached raises
:class:`pta.errors.StoreUnavailable` from any call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from broker.store.policy_store import PolicyStore
    from broker.store.records import (
        AdministratorRecord,
        AgentRecord,
        BrokerRecord,
        CertificateRecord,
        ConnectionStatus,
        DirectoryPolicyRecord,
        ReportedPolicy,
        TokenRecord,
    )
    from pta.tokens import EnrolmentToken


class TenantStore(Protocol):
    """Tenants and the domains they verified: which tenant a sign-in belongs to."""

    def add_tenant(self, name: str, domains: list[str]) -> None:
        """Create a tenant owning ``domains``, all or nothing.

        Raises:
            InvalidRequest: The name is not a DNS label, is taken, or a domain is owned.
        """

    def tenants(self) -> dict[str, list[str]]:
        """Every tenant with its domains."""

    def tenant_for_domain(self, domain: str) -> str | None:
        """The tenant that owns ``domain``; on every sign-in, so it must be cheap.

        Another process's new domain may be answered from a cache for up to a tick (0.25 s), or
        until :meth:`Store.changed` says so; this handle's own writes are seen at once.
        """

    def tenant_domains(self, tenant: str) -> frozenset[str]:
        """The domains a tenant has verified."""


class TokenStore(Protocol):
    """One-time enrolment tokens, kept as hashes only."""

    def create_token(self, tenant: str, ttl: float, ca_sha256: str) -> EnrolmentToken:
        """A new token for ``tenant``, usable for ``ttl`` seconds (its secret is not kept).

        Raises:
            NotFound: No such tenant.
        """

    def check_token(self, token: EnrolmentToken) -> str:
        """The tenant of a usable token, without using it up.

        Raises:
            Unauthenticated: Unknown, wrong, used or expired (one message for all).
        """

    def consume_token(self, token: EnrolmentToken) -> str:
        """Use a token up and return its tenant: of any number of racing calls, one succeeds.

        Raises:
            Unauthenticated: As :meth:`check_token`.
        """

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, newest first."""

    def delete_token(self, token_id: str) -> bool:
        """Delete a token; whether it existed."""


class ReportStore(Protocol):
    """What agents and the serving broker report, kept for decisions and for operators."""

    def record_directory_policies(
        self, tenant: str, agent_id: str, policies: Sequence[ReportedPolicy]
    ) -> list[DirectoryPolicyRecord]:
        """Replace an agent's report of its directories' lockout thresholds; the records kept."""

    def directory_policies(self, tenant: str) -> list[DirectoryPolicyRecord]:
        """Every agent's last report for ``tenant``'s domains, by domain then agent."""

    def report_status(self, broker_id: str, values: Mapping[str, str]) -> None:
        """Replace what one broker says of itself (e.g. that it holds an MFA key); empty: gone."""

    def status(self, *, fresh_within: float) -> dict[str, dict[str, str]]:
        """What each broker reported within ``fresh_within`` seconds, by broker id (empty: none).

        Per broker, because brokers of one store may differ (one started without an MFA key):
        a caller asking "can the cluster do X" asks whether every fresh broker says so.
        """


class AgentStore(Protocol):
    """Enrolled agents, the certificates issued to them, revocations and live streams."""

    def add(  # noqa: PLR0913 - one record, named fields
        self,
        *,
        agent_id: str,
        tenant: str,
        hostname: str,
        version: str,
        serial: str,
        envelope_public_key: bytes,
        not_after: float,
    ) -> None:
        """Record a newly enrolled agent and its first certificate."""

    def renew(
        self, old: CertificateRecord, *, serial: str, envelope_public_key: bytes, not_after: float
    ) -> None:
        """Record a renewal of ``old``, atomically retiring an earlier renewal never used.

        Raises:
            Unauthenticated: ``old`` may no longer renew (revoked, retired, expired).
        """

    def attached(self, record: CertificateRecord) -> None:
        """A stream of ``record`` was attached: the certificate it renewed is retired."""

    def revoke(self, agent_id: str) -> bool:
        """Revoke an agent (none of its certificates connects or renews again); if it existed."""

    def certificate(self, serial: str) -> CertificateRecord | None:
        """A certificate the broker issued, with its agent's tenant and state."""

    def certificates(self, serials: Collection[str]) -> dict[str, CertificateRecord]:
        """Many certificates at once (every live stream's, each tick), by serial."""

    def report_connections(self, broker_id: str, statuses: Sequence[ConnectionStatus]) -> None:
        """Replace one broker's snapshot of its live streams, for operators; empty: it stopped."""

    def list(self, *, fresh_within: float) -> list[AgentRecord]:
        """Every agent with its usable certificates and the streams reported lately.

        The streams are every broker's fresh report merged; each says which broker holds it.
        """


class AdministratorStore(Protocol):
    """The certificates issued to administrators: who may call the AdminService.

    Looked up on every admin call (they are rare), never cached: a revocation recorded by any
    process holds at every broker of the store from the next call on.
    """

    def add(self, *, name: str, serial: str, not_after: float) -> None:
        """Record a certificate issued to administrator ``name`` (a name may hold several)."""

    def certificate(self, serial: str) -> AdministratorRecord | None:
        """The record of an administrator certificate, or None if none was issued by that serial."""

    def revoke(self, name: str) -> int:
        """Revoke every certificate of ``name``, for good; how many were not revoked before."""

    def list(self) -> list[AdministratorRecord]:
        """Every administrator certificate, by name then issue time."""


class ClusterStore(Protocol):
    """The brokers serving one store: which CA they share, and which of them are up.

    With SQLite there is one broker; with a shared store, every broker registers and
    heartbeats here, and agents learn from any of them where the others are.
    """

    def claim_ca(self, fingerprint: str) -> str:
        """The cluster's CA fingerprint: the first claim is kept, later ones are answered it.

        A broker whose own CA differs from the answer must not serve: its certificates would
        not be trusted by the agents and clients of the others.
        """

    def cluster_ca(self) -> str | None:
        """The CA fingerprint the first broker claimed; None until a broker served the store."""

    def register_broker(self, record: BrokerRecord) -> None:
        """Say a broker is up (insert or refresh it); called at start and every heartbeat."""

    def brokers(self, *, fresh_within: float) -> list[BrokerRecord]:
        """The brokers whose heartbeat is at most ``fresh_within`` seconds old, by id."""

    def deregister_broker(self, broker_id: str) -> None:
        """A broker stopping says so, rather than waiting to go stale."""

    def signing_keys(self) -> list[tuple[str, float, bytes]]:
        """(kid, not before, sealed private key) of every token-signing key kept."""

    def add_signing_key(
        self, kid: str, not_before: float, sealed: bytes, *, unless_after: float
    ) -> bool:
        """Keep a sealed signing key, atomically unless one starting after ``unless_after`` is.

        Of brokers racing to make the next key, one does; the others are answered False.
        """

    def remove_signing_key(self, kid: str) -> None:
        """Forget a signing key (idempotent)."""


class Store(TenantStore, TokenStore, ReportStore, ClusterStore, Protocol):
    """The whole store a broker (or a management command) opens: every aggregate."""

    #: Whether several brokers may serve this store at once: what they decide together
    #: (lockout counters, checks in flight, MFA challenges) must then be decided in it, not
    #: in any one broker's memory.
    shared: bool

    @property
    def agents(self) -> AgentStore:
        """Agents, certificates and streams."""

    @property
    def administrators(self) -> AdministratorStore:
        """Administrator certificates and their revocations."""

    @property
    def policy(self) -> PolicyStore:
        """The sign-in policy's state."""

    def failures(self) -> int:
        """How many calls failed for want of the store since it was opened (for operators).

        No I/O; safe from any thread (an integer read).
        """

    def check_reachable(self) -> None:
        """Raise when the store is known to be out of reach; no I/O, so cheap on every call.

        A broker that cannot read its store cannot learn of a revocation made through
        another: it sends no password to any agent until the store answers again.

        Raises:
            StoreUnavailable: While the store is known to be out of reach.
        """

    def changed(self) -> bool:
        """Whether what a serving broker caches changed since the last call: reload it then.

        It must say so after another process changed tenants or domains, a tenant policy, a
        banned list, an agent (a revocation), an authenticator, or cleared counters. It may
        also say so after other writes, and after this handle's own.
        """

    def close(self) -> None:
        """Release the store's connections."""
