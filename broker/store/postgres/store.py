"""The store several brokers share, in PostgreSQL: tenants, tokens, reports, the cluster.

Agents live in :mod:`.agents`, the sign-in policy's state in :mod:`.policy`, the schema and
its migrations in :mod:`.schema`, the pool and its failures in :mod:`.db` (which says why
synchronous psycopg with a pool). Opening a store migrates it if needed. Like the SQLite store
it holds no secret: tokens are kept as hashes, agents by the public halves of their keys.

What every broker caches is announced by the ``changes`` counter (:mod:`.schema`): each
broker's :meth:`PostgresStore.changed`, every tick, is one row read. ``tenant_for_domain`` is on
every sign-in: it answers from memory, and reloads the domains when the counter moved (read by
``changed``, or by itself when nobody asked for :data:`DOMAINS_RECHECK` seconds).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import psycopg

from broker.store import rows
from broker.store.postgres.administrators import PostgresAdministratorStore
from broker.store.postgres.agents import PostgresAgentStore
from broker.store.postgres.db import Database, lock_pair
from broker.store.postgres.policy import PostgresPolicyStore
from broker.store.postgres.schema import migrate
from broker.store.records import (
    TOKEN_REFUSED,
    BrokerRecord,
    DirectoryPolicyRecord,
    ReportedPolicy,
    TokenRecord,
    check_tenant_name,
)
from pta.errors import InvalidRequest, NotFound, Unauthenticated
from pta.names import normalize_domain
from pta.tokens import EnrolmentToken, new_token

#: The advisory lock the making of a signing key runs under ("pta_key" as a number).
SIGNING_KEY_LOCK = 0x7074615F6B6579

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: A handle whose ``changed`` nobody calls still sees another's new domains this soon.
DOMAINS_RECHECK = 0.25


class PostgresStore:
    """A handle on the shared store; safe to use from several threads (one pool)."""

    #: Several brokers serve it: what they decide together is decided in it.
    shared = True

    def __init__(self, url: str) -> None:
        """Connect, migrate the schema if needed, and open the pool.

        Raises:
            ValueError: ``url`` is not a PostgreSQL URL.
            StoreUnavailable: The server cannot be reached.
            StoreTooNew: The schema is newer than this program knows.
        """
        self._db = Database(url)
        with self._db.direct() as conn:
            migrate(conn, self._db.where)
        self._db.open_pool()
        self.agents = PostgresAgentStore(self._db)
        self.administrators = PostgresAdministratorStore(self._db)
        self.policy = PostgresPolicyStore(self._db)
        self._seen = -1
        #: The counter as last read, and when (monotonic).
        self._latest, self._latest_at = -1, float("-inf")
        self._domains: dict[str, str] = {}
        self._domains_version = -2

    def __repr__(self) -> str:
        """Where, never with the password."""
        return f"PostgresStore({self._db.where!r})"

    def close(self) -> None:
        """Close the pool's connections."""
        self.policy.close()
        self._db.close()

    def check_reachable(self) -> None:
        """See :meth:`Store.check_reachable`: the pool's verdict on its last call."""
        self._db.check_reachable()

    def failures(self) -> int:
        """See :meth:`Store.failures`: calls that failed, the unreachable store's included."""
        return self._db.failures

    def changed(self) -> bool:
        """Whether a table a broker caches from was written since the last call."""
        counter = self._changes()
        seen, self._seen = self._seen, counter
        return counter != seen

    def _changes(self) -> int:
        row = self._db.row("SELECT counter FROM changes")
        self._latest, self._latest_at = (int(row[0]) if row else 0), time.monotonic()
        return self._latest

    # Tenants and domains -------------------------------------------------------------------

    def add_tenant(self, name: str, domains: list[str]) -> None:
        """Create a tenant owning ``domains``, in one transaction.

        Raises:
            InvalidRequest: When the name is taken, or a domain belongs to another tenant.
        """
        check_tenant_name(name)
        suffixes = [normalize_domain(d) for d in domains]
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    "INSERT INTO tenants (name, created_at) VALUES (%s, %s)", (name, time.time())
                )
                conn.cursor().executemany(
                    "INSERT INTO domains (suffix, tenant) VALUES (%s, %s)",
                    [(s, name) for s in suffixes],
                )
        except psycopg.errors.UniqueViolation as error:
            raise InvalidRequest(f"tenant {name!r} or one of its domains exists already") from error
        self._latest_at = float("-inf")  # Our own write: the next lookup rereads.

    def tenants(self) -> dict[str, list[str]]:
        """Return every tenant with its domains."""
        return rows.tenants(
            self._db.rows("SELECT name FROM tenants ORDER BY name"),
            self._db.rows("SELECT suffix, tenant FROM domains ORDER BY 1"),
        )

    def tenant_for_domain(self, domain: str) -> str | None:
        """Return the tenant that owns a domain, from memory unless the counter moved."""
        if time.monotonic() - self._latest_at >= DOMAINS_RECHECK:
            self._changes()
        if self._latest != self._domains_version:
            # One statement, one snapshot: the counter and the domains it stands for.
            row = self._db.row(
                "SELECT (SELECT counter FROM changes), json_object_agg(suffix, tenant) FROM domains"
            )
            if row is not None:
                self._domains_version, self._domains = int(row[0]), dict(row[1] or {})
        return self._domains.get(domain)

    def tenant_domains(self, tenant: str) -> frozenset[str]:
        """Return the domains a tenant has verified."""
        found = self._db.rows("SELECT suffix FROM domains WHERE tenant = %s", (tenant,))
        return frozenset(suffix for (suffix,) in found)

    # Enrolment tokens -----------------------------------------------------------------------

    def create_token(self, tenant: str, ttl: float, ca_sha256: str) -> EnrolmentToken:
        """Make a one-time token for ``tenant`` that expires after ``ttl`` seconds.

        Raises:
            NotFound: When the tenant does not exist.
        """
        token = new_token(ca_sha256)
        now = time.time()
        inserted = self._db.run(
            "INSERT INTO tokens (id, tenant, secret_hash, created_at, expires_at)"
            " SELECT %s, name, %s, %s, %s FROM tenants WHERE name = %s",
            (token.token_id, token.secret_hash, now, now + ttl, tenant),
        )
        if not inserted:
            raise NotFound(f"no tenant {tenant!r}")
        return token

    def check_token(self, token: EnrolmentToken) -> str:
        """Return the tenant of a usable token without using it up.

        Raises:
            Unauthenticated: As :meth:`consume_token` would.
        """
        row = self._db.row(
            "SELECT tenant, secret_hash FROM tokens"
            " WHERE id = %s AND used_at IS NULL AND expires_at > %s",
            (token.token_id, time.time()),
        )
        if row is None or not token.matches(bytes(row[1])):
            raise Unauthenticated(TOKEN_REFUSED)
        return str(row[0])

    def consume_token(self, token: EnrolmentToken) -> str:
        """Use a token up and return its tenant: the row is locked while its secret is compared.

        Raises:
            Unauthenticated: When it is unknown, wrong, used or expired (one message for all).
        """
        now = time.time()
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT tenant, secret_hash FROM tokens"
                " WHERE id = %s AND used_at IS NULL AND expires_at > %s FOR UPDATE",
                (token.token_id, now),
            ).fetchone()
            # A racing consumer waited on the lock, and then found used_at set: no row.
            if row is None or not token.matches(bytes(row[1])):
                raise Unauthenticated(TOKEN_REFUSED)
            conn.execute("UPDATE tokens SET used_at = %s WHERE id = %s", (now, token.token_id))
        return str(row[0])

    def list_tokens(self) -> list[TokenRecord]:
        """Return every token, newest first."""
        found = self._db.rows(
            "SELECT id, tenant, created_at, expires_at, used_at FROM tokens"
            " ORDER BY created_at DESC"
        )
        return [TokenRecord(*row) for row in found]

    def delete_token(self, token_id: str) -> bool:
        """Delete a token; return whether it existed."""
        return self._db.run("DELETE FROM tokens WHERE id = %s", (token_id,)) > 0

    # What each serving broker says of itself --------------------------------------------------

    def report_status(self, broker_id: str, values: Mapping[str, str]) -> None:
        """Replace what one broker reports about itself (empty: it stopped)."""
        now = time.time()
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM broker_status WHERE broker_id = %s", (broker_id,))
            conn.cursor().executemany(
                "INSERT INTO broker_status (broker_id, name, value, updated_at)"
                " VALUES (%s, %s, %s, %s)",
                [(broker_id, name, value, now) for name, value in values.items()],
            )

    def status(self, *, fresh_within: float) -> dict[str, dict[str, str]]:
        """What each broker reported within ``fresh_within`` seconds, by broker id."""
        return rows.by_broker(
            self._db.rows(
                "SELECT broker_id, name, value FROM broker_status WHERE updated_at >= %s"
                " ORDER BY broker_id, name",
                (time.time() - fresh_within,),
            )
        )

    # The brokers serving this store ---------------------------------------------------------

    def claim_ca(self, fingerprint: str) -> str:
        """The cluster's CA fingerprint: the first claim is kept, in one statement.

        ``DO UPDATE`` to itself (not ``DO NOTHING``) so that the row comes back either way:
        a racing second claimant waits for the first to commit, and is answered its value.
        """
        row = self._db.row(
            "INSERT INTO cluster (name, value) VALUES ('ca_sha256', %s)"
            " ON CONFLICT (name) DO UPDATE SET value = cluster.value RETURNING value",
            (fingerprint,),
        )
        return str(row[0]) if row else fingerprint

    def cluster_ca(self) -> str | None:
        """The CA fingerprint claimed by the first broker, if one served yet."""
        row = self._db.row("SELECT value FROM cluster WHERE name = 'ca_sha256'")
        return None if row is None else str(row[0])

    # Token-signing keys, sealed ------------------------------------------------------------

    def signing_keys(self) -> list[tuple[str, float, bytes]]:
        """Every sealed signing key."""
        rows = self._db.rows("SELECT kid, not_before, sealed FROM signing_keys")
        return [(kid, not_before, bytes(sealed)) for kid, not_before, sealed in rows]

    def add_signing_key(
        self, kid: str, not_before: float, sealed: bytes, *, unless_after: float
    ) -> bool:
        """Keep a key unless a later one exists: one transaction under an advisory lock."""
        with self._db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SIGNING_KEY_LOCK,))
            later = conn.execute(
                "SELECT 1 FROM signing_keys WHERE not_before > %s", (unless_after,)
            ).fetchone()
            if later is not None:
                return False
            conn.execute(
                "INSERT INTO signing_keys (kid, not_before, sealed) VALUES (%s, %s, %s)",
                (kid, not_before, sealed),
            )
        return True

    def remove_signing_key(self, kid: str) -> None:
        """Forget a signing key."""
        self._db.run("DELETE FROM signing_keys WHERE kid = %s", (kid,))

    def register_broker(self, record: BrokerRecord) -> None:
        """Insert or refresh a broker's heartbeat."""
        self._db.run(
            "INSERT INTO brokers (id, agent_endpoint, public_endpoint, started_at, heartbeat_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
            " agent_endpoint = excluded.agent_endpoint,"
            " public_endpoint = excluded.public_endpoint, heartbeat_at = excluded.heartbeat_at",
            (
                record.broker_id,
                record.agent_endpoint,
                record.public_endpoint,
                record.started_at,
                record.heartbeat_at,
            ),
        )

    def brokers(self, *, fresh_within: float) -> list[BrokerRecord]:
        """The brokers heard from within ``fresh_within`` seconds."""
        found = self._db.rows(
            "SELECT id, agent_endpoint, public_endpoint, started_at, heartbeat_at FROM brokers"
            " WHERE heartbeat_at >= %s ORDER BY id",
            (time.time() - fresh_within,),
        )
        return [BrokerRecord(*row) for row in found]

    def deregister_broker(self, broker_id: str) -> None:
        """Forget a broker that stops."""
        self._db.run("DELETE FROM brokers WHERE id = %s", (broker_id,))

    # Directory lockout policies ---------------------------------------------------------------

    def record_directory_policies(
        self, tenant: str, agent_id: str, policies: Sequence[ReportedPolicy]
    ) -> list[DirectoryPolicyRecord]:
        """Keep an agent's report, replacing what it reported before, in one transaction.

        Returns:
            The records as stored.
        """
        now = time.time()
        records = rows.directory_policies(tenant, agent_id, policies, now)
        with self._db.transaction() as conn:
            lock_pair(conn, tenant, agent_id)  # The agent says it at every broker at once.
            conn.execute(
                "DELETE FROM directory_policies WHERE tenant = %s AND agent_id = %s",
                (tenant, agent_id),
            )
            conn.cursor().executemany(
                "INSERT INTO directory_policies (tenant, domain, agent_id, known,"
                " lockout_threshold, source, reported_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (r.tenant, r.domain, r.agent_id, r.known, r.lockout_threshold, r.source, now)
                    for r in records
                ],
            )
        return records

    def directory_policies(self, tenant: str) -> list[DirectoryPolicyRecord]:
        """Every agent's last report for ``tenant``'s domains, by domain then agent."""
        found = self._db.rows(
            "SELECT tenant, domain, agent_id, known, lockout_threshold, source, reported_at"
            " FROM directory_policies WHERE tenant = %s ORDER BY domain, agent_id",
            (tenant,),
        )
        return [rows.directory_policy(row) for row in found]
