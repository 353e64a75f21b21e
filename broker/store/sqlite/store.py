"""The broker's persistent state: tenants, domains, agents, certificates, tokens, policies.

The policies are what each agent last said about its directories' lockout thresholds.
SQLite in the data directory is the embedded default. It holds no secret: tokens are stored as
hashes, and an agent is known by the public halves of its keys only. The CLI writes to the same
file while the broker serves; the broker notices through SQLite's ``data_version``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from broker.store import rows
from broker.store.records import (
    TOKEN_REFUSED,
    BrokerRecord,
    DirectoryPolicyRecord,
    ReportedPolicy,
    TokenRecord,
    check_tenant_name,
)
from broker.store.sqlite.administrators import SqliteAdministratorStore
from broker.store.sqlite.agents import SqliteAgentStore
from broker.store.sqlite.db import connect, transaction
from broker.store.sqlite.policy import SqlitePolicyStore
from pta.errors import InvalidRequest, NotFound, Unauthenticated
from pta.names import normalize_domain
from pta.tokens import EnrolmentToken, new_token

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

STORE_FILE = "pta.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS domains (
    suffix TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    secret_hash BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE TABLE IF NOT EXISTS broker_status (
    broker_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (broker_id, name)
);
CREATE TABLE IF NOT EXISTS cluster (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS brokers (
    id TEXT PRIMARY KEY,
    agent_endpoint TEXT NOT NULL,
    public_endpoint TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    not_before REAL NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS directory_policies (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    domain TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    known INTEGER NOT NULL,
    lockout_threshold INTEGER NOT NULL,
    source TEXT NOT NULL,
    reported_at REAL NOT NULL,
    PRIMARY KEY (tenant, domain, agent_id)
);
"""


class SqliteStore:
    """SQLite-backed state; one instance per process, used from one thread at a time."""

    #: One broker serves a data dir (it is locked): the broker's memory may hold the rest.
    shared = False

    def __init__(self, data_dir: Path) -> None:
        """Open (and create) the store in ``data_dir``."""
        self._db = connect(data_dir / STORE_FILE)
        # A store made before reports were per broker: they are a second old, drop them.
        have = {row[1] for row in self._db.execute("PRAGMA table_info(broker_status)")}
        if have and "broker_id" not in have:
            self._db.execute("DROP TABLE broker_status")
        self._db.executescript(SCHEMA)
        self.agents = SqliteAgentStore(self._db)
        self.administrators = SqliteAdministratorStore(self._db)
        self.policy = SqlitePolicyStore(self._db)
        self._domains: dict[str, str] = {}
        self._domains_version = -1
        self._seen_version = -1

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # Tenants and domains -------------------------------------------------------------------

    def add_tenant(self, name: str, domains: list[str]) -> None:
        """Create a tenant owning ``domains``.

        Raises:
            InvalidRequest: When the name is taken, or a domain belongs to another tenant.
        """
        check_tenant_name(name)
        suffixes = [normalize_domain(d) for d in domains]
        try:
            with transaction(self._db):
                self._db.execute(
                    "INSERT INTO tenants (name, created_at) VALUES (?, ?)", (name, time.time())
                )
                self._db.executemany(
                    "INSERT INTO domains (suffix, tenant) VALUES (?, ?)",
                    [(s, name) for s in suffixes],
                )
        except sqlite3.IntegrityError as error:
            raise InvalidRequest(f"tenant {name!r} or one of its domains exists already") from error
        self._domains_version = -1  # data_version counts other connections' writes only.

    def tenants(self) -> dict[str, list[str]]:
        """Return every tenant with its domains."""
        return rows.tenants(
            self._db.execute("SELECT name FROM tenants ORDER BY name"),
            self._db.execute("SELECT suffix, tenant FROM domains ORDER BY 1"),
        )

    def tenant_for_domain(self, domain: str) -> str | None:
        """Return the tenant that owns a domain; the sign-in hot path, so cached.

        The cache is refreshed only when another connection (the CLI) changed the file.
        """
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if version != self._domains_version:
            self._domains = dict(self._db.execute("SELECT suffix, tenant FROM domains"))
            self._domains_version = version
        return self._domains.get(domain)

    def tenant_domains(self, tenant: str) -> frozenset[str]:
        """Return the domains a tenant has verified."""
        found = self._db.execute("SELECT suffix FROM domains WHERE tenant = ?", (tenant,))
        return frozenset(suffix for (suffix,) in found)

    # Enrolment tokens -----------------------------------------------------------------------

    def create_token(self, tenant: str, ttl: float, ca_sha256: str) -> EnrolmentToken:
        """Make a one-time token for ``tenant`` that expires after ``ttl`` seconds.

        Raises:
            NotFound: When the tenant does not exist.
        """
        if not self._db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone():
            raise NotFound(f"no tenant {tenant!r}")
        token = new_token(ca_sha256)
        now = time.time()
        self._db.execute(
            "INSERT INTO tokens (id, tenant, secret_hash, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (token.token_id, tenant, token.secret_hash, now, now + ttl),
        )
        return token

    def check_token(self, token: EnrolmentToken) -> str:
        """Return the tenant of a usable token without using it up: the cheap check first.

        Raises:
            Unauthenticated: As :meth:`consume_token` would.
        """
        row = self._db.execute(
            "SELECT tenant, secret_hash FROM tokens"
            " WHERE id = ? AND used_at IS NULL AND expires_at > ?",
            (token.token_id, time.time()),
        ).fetchone()
        if row is None or not token.matches(row[1]):
            raise Unauthenticated(TOKEN_REFUSED)
        tenant: str = row[0]
        return tenant

    def consume_token(self, token: EnrolmentToken) -> str:
        """Use a token up and return its tenant; a token works once.

        Raises:
            Unauthenticated: When it is unknown, wrong, used or expired (one message for all,
                so a guesser learns nothing).
        """
        now = time.time()
        with transaction(self._db):
            row = self._db.execute(
                "SELECT tenant, secret_hash FROM tokens"
                " WHERE id = ? AND used_at IS NULL AND expires_at > ?",
                (token.token_id, now),
            ).fetchone()
            if row is None or not token.matches(row[1]):
                raise Unauthenticated(TOKEN_REFUSED)
            self._db.execute("UPDATE tokens SET used_at = ? WHERE id = ?", (now, token.token_id))
        tenant: str = row[0]
        return tenant

    def list_tokens(self) -> list[TokenRecord]:
        """Return every token, newest first."""
        found = self._db.execute(
            "SELECT id, tenant, created_at, expires_at, used_at FROM tokens"
            " ORDER BY created_at DESC"
        )
        return [TokenRecord(*row) for row in found]

    def delete_token(self, token_id: str) -> bool:
        """Delete a token; return whether it existed."""
        cursor = self._db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        return cursor.rowcount > 0

    def check_reachable(self) -> None:
        """A local file is always there (see :meth:`Store.check_reachable`)."""

    def failures(self) -> int:
        """None: a local file has no server to lose (see :meth:`Store.failures`)."""
        return 0

    def changed(self) -> bool:
        """Whether another process (the CLI) wrote to the store since the last call."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        seen, self._seen_version = self._seen_version, version
        return bool(version != seen)

    # What the serving broker says of itself, for the CLI ---------------------------------------

    def report_status(self, broker_id: str, values: Mapping[str, str]) -> None:
        """Replace what a broker reports about itself (e.g. whether it has an MFA key)."""
        now = time.time()
        with transaction(self._db):
            self._db.execute("DELETE FROM broker_status WHERE broker_id = ?", (broker_id,))
            self._db.executemany(
                "INSERT INTO broker_status (broker_id, name, value, updated_at)"
                " VALUES (?, ?, ?, ?)",
                [(broker_id, name, value, now) for name, value in values.items()],
            )

    def status(self, *, fresh_within: float) -> dict[str, dict[str, str]]:
        """What each broker serving this store reported within ``fresh_within`` s, by id."""
        return rows.by_broker(
            self._db.execute(
                "SELECT broker_id, name, value FROM broker_status WHERE updated_at >= ?"
                " ORDER BY broker_id, name",
                (time.time() - fresh_within,),
            )
        )

    # The brokers serving this store ---------------------------------------------------------

    def claim_ca(self, fingerprint: str) -> str:
        """The store's CA fingerprint: the first claim is kept."""
        self._db.execute(
            "INSERT INTO cluster (name, value) VALUES ('ca_sha256', ?) ON CONFLICT DO NOTHING",
            (fingerprint,),
        )
        (kept,) = self._db.execute("SELECT value FROM cluster WHERE name = 'ca_sha256'").fetchone()
        return str(kept)

    def cluster_ca(self) -> str | None:
        """The CA fingerprint claimed by the first broker, if one served yet."""
        row = self._db.execute("SELECT value FROM cluster WHERE name = 'ca_sha256'").fetchone()
        return None if row is None else str(row[0])

    def register_broker(self, record: BrokerRecord) -> None:
        """Insert or refresh a broker's heartbeat."""
        self._db.execute(
            "INSERT INTO brokers (id, agent_endpoint, public_endpoint, started_at, heartbeat_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
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
        found = self._db.execute(
            "SELECT id, agent_endpoint, public_endpoint, started_at, heartbeat_at FROM brokers"
            " WHERE heartbeat_at >= ? ORDER BY id",
            (time.time() - fresh_within,),
        )
        return [BrokerRecord(*row) for row in found]

    def deregister_broker(self, broker_id: str) -> None:
        """Forget a broker that stops."""
        self._db.execute("DELETE FROM brokers WHERE id = ?", (broker_id,))

    def signing_keys(self) -> list[tuple[str, float, bytes]]:
        """Every sealed signing key kept in the store."""
        return list(self._db.execute("SELECT kid, not_before, sealed FROM signing_keys"))

    def add_signing_key(
        self, kid: str, not_before: float, sealed: bytes, *, unless_after: float
    ) -> bool:
        """Keep a key unless a later one exists, in one immediate transaction."""
        with transaction(self._db):
            later = self._db.execute(
                "SELECT 1 FROM signing_keys WHERE not_before > ?", (unless_after,)
            ).fetchone()
            if later is not None:
                return False
            self._db.execute(
                "INSERT INTO signing_keys (kid, not_before, sealed) VALUES (?, ?, ?)",
                (kid, not_before, sealed),
            )
        return True

    def remove_signing_key(self, kid: str) -> None:
        """Forget a signing key."""
        self._db.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,))

    # Directory lockout policies ---------------------------------------------------------------

    def record_directory_policies(
        self, tenant: str, agent_id: str, policies: Sequence[ReportedPolicy]
    ) -> list[DirectoryPolicyRecord]:
        """Keep an agent's report, replacing what it reported before.

        A report covers every domain the agent serves, so a domain it no longer reports is
        forgotten for that agent. Domains must differ (the caller checked them).

        Returns:
            The records as stored.
        """
        now = time.time()
        records = rows.directory_policies(tenant, agent_id, policies, now)
        with transaction(self._db):
            self._db.execute(
                "DELETE FROM directory_policies WHERE tenant = ? AND agent_id = ?",
                (tenant, agent_id),
            )
            self._db.executemany(
                "INSERT INTO directory_policies (tenant, domain, agent_id, known,"
                " lockout_threshold, source, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.tenant, r.domain, r.agent_id, r.known, r.lockout_threshold, r.source, now)
                    for r in records
                ],
            )
        return records

    def directory_policies(self, tenant: str) -> list[DirectoryPolicyRecord]:
        """Every agent's last report for ``tenant``'s domains, by domain then agent."""
        found = self._db.execute(
            "SELECT tenant, domain, agent_id, known, lockout_threshold, source, reported_at"
            " FROM directory_policies WHERE tenant = ? ORDER BY domain, agent_id",
            (tenant,),
        )
        return [rows.directory_policy(row) for row in found]
