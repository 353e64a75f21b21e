"""The PostgreSQL store's schema: an ordered list of migrations, applied at open, versioned.

``schema_version`` holds one row per migration applied. Opening a store compares its version
with :data:`MIGRATIONS`: equal, nothing more is done (no lock, no DDL: a broker may run as a
role that cannot create tables once the schema is in place); older, the missing migrations are
applied in one transaction under a transaction-scoped advisory lock, so of several brokers
started at once exactly one migrates and the others wait on the lock, then find the work done;
newer, the store was migrated by a newer pta-broker and this one refuses to open it
(:class:`pta.errors.StoreTooNew`) rather than misread what it does not know. A migration is
never edited once released: a change is a new entry at the end.

Beyond plain tables, the schema has one trigger function, and that is deliberate: ``changes``
is a one-row counter that statement-level triggers bump whenever a table a serving broker
caches from is written (tenants, domains, tenant policies, banned-password revisions, agents,
authenticators; an administrator's unlock bumps it in its own statement). Each broker reads it
every tick (:meth:`PostgresStore.changed`): one indexed row, a fraction of a millisecond, and
the write is seen at the next tick, because the bump commits with the write it announces. The
tables the sign-in path writes (counters, familiar networks, known accounts, TOTP steps,
reports) have no trigger: every broker would reload everything every tick under load.
LISTEN/NOTIFY was the alternative; it needs a connection held outside the pool, and a
notification sent while that connection is down is lost, whereas a counter is simply read
again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, LiteralString

from pta.errors import StoreTooNew

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

#: The advisory lock migrations run under ("pta_sch" as a number): one per database.
MIGRATION_LOCK = 0x7074615F736368

_TABLES_V1 = """
CREATE TABLE changes (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    counter BIGINT NOT NULL
);
INSERT INTO changes (only_row, counter) VALUES (TRUE, 0);
CREATE FUNCTION pta_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE changes SET counter = counter + 1;
    RETURN NULL;
END
$$;
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE domains (
    suffix TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE
);
CREATE INDEX domains_by_tenant ON domains (tenant);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    secret_hash BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);
CREATE TABLE cluster (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE brokers (
    id TEXT PRIMARY KEY,
    agent_endpoint TEXT NOT NULL,
    public_endpoint TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE broker_status (
    broker_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (broker_id, name)
);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    envelope_public_key BYTEA NOT NULL,
    issued_at DOUBLE PRECISION NOT NULL,
    not_after DOUBLE PRECISION NOT NULL,
    predecessor TEXT,
    retired_at DOUBLE PRECISION,
    retired_by TEXT
);
CREATE INDEX certificates_by_agent ON certificates (agent_id);
CREATE INDEX certificates_by_predecessor ON certificates (predecessor);
CREATE TABLE connections (
    broker_id TEXT NOT NULL,
    id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    serial TEXT NOT NULL,
    domains TEXT[] NOT NULL,
    connected_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    in_flight INTEGER NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (broker_id, id)
);
CREATE TABLE directory_policies (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    domain TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    known BOOLEAN NOT NULL,
    lockout_threshold INTEGER NOT NULL,
    source TEXT NOT NULL,
    reported_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, domain, agent_id)
);
CREATE TABLE tenant_policies (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    settings TEXT NOT NULL
);
CREATE TABLE lockouts (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    location TEXT NOT NULL,
    failures INTEGER NOT NULL,
    lockouts INTEGER NOT NULL,
    locked_until DOUBLE PRECISION NOT NULL,
    last_failure DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, user_key, location)
);
CREATE TABLE familiar_networks (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    prefix TEXT NOT NULL,
    last_success DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, user_key, prefix)
);
CREATE TABLE account_rules (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    domain TEXT NOT NULL,
    directory TEXT NOT NULL,
    scope TEXT NOT NULL,
    reported_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, agent_id, domain)
);
CREATE TABLE known_accounts (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    confirmed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, user_key)
);
CREATE TABLE banned_passwords (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    normalised TEXT NOT NULL,
    term TEXT NOT NULL,
    added_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, normalised)
);
CREATE TABLE banned_password_revisions (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    revision BIGINT NOT NULL
);
CREATE TABLE mfa_secrets (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    last_step BIGINT NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, user_key)
);
"""

#: Writes a serving broker must notice (see the module docstring). Not UPDATE of mfa_secrets:
#: spending a TOTP step is an update, on the sign-in path.
_TRIGGERS_V1 = """
CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION pta_changed();
CREATE TRIGGER domains_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION pta_changed();
CREATE TRIGGER tenant_policies_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON tenant_policies FOR EACH STATEMENT EXECUTE FUNCTION pta_changed();
CREATE TRIGGER banned_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON banned_password_revisions FOR EACH STATEMENT EXECUTE FUNCTION pta_changed();
CREATE TRIGGER agents_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION pta_changed();
CREATE TRIGGER mfa_secrets_changed AFTER INSERT OR DELETE OR TRUNCATE ON mfa_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION pta_changed();
"""

# What brokers decide together (broker/store/postgres/coordination.py) and the sealed
# token-signing keys: written on the sign-in path or by rotation, so no trigger.
_COORDINATION_V1 = """
CREATE TABLE flights (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_key TEXT NOT NULL,
    location TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX flights_by_user ON flights (tenant, user_key);
CREATE TABLE mfa_challenges (
    key BYTEA PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_key TEXT NOT NULL,
    subject TEXT NOT NULL,
    address TEXT NOT NULL,
    location TEXT NOT NULL,
    request_id TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    attempts_left INTEGER NOT NULL
);
CREATE TABLE repeats (
    tenant TEXT NOT NULL,
    user_key TEXT NOT NULL,
    digest BYTEA NOT NULL,
    known BOOLEAN NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, user_key, digest)
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    not_before DOUBLE PRECISION NOT NULL,
    sealed BYTEA NOT NULL
);
"""

#: Version 2: who may call the AdminService. Read on each admin call, so no trigger.
_ADMINISTRATORS_V2 = """
CREATE TABLE administrators (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    issued_at DOUBLE PRECISION NOT NULL,
    not_after DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
"""

#: Version 3: each stream's last health report from its agent (JSON; empty: none yet).
_HEALTH_V3 = """
ALTER TABLE connections ADD COLUMN health TEXT NOT NULL DEFAULT '';
"""

#: Every migration, in order: version N is the N-th. Released entries never change.
MIGRATIONS: tuple[LiteralString, ...] = (
    _TABLES_V1 + _COORDINATION_V1 + _TRIGGERS_V1,
    _ADMINISTRATORS_V2,
    _HEALTH_V3,
)


def version(conn: psycopg.Connection[TupleRow]) -> int:
    """The store's schema version: 0 for an empty database."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row is not None else 0


def migrate(conn: psycopg.Connection[TupleRow], where: str) -> int:
    """Bring the store's schema up to :data:`MIGRATIONS`, once, whoever else is opening it.

    Args:
        conn: An autocommit connection of its own (not in a transaction).
        where: The store as it may be shown, for the refusal.

    Returns:
        How many migrations this call applied (0 when another process had, or none was due).

    Raises:
        StoreTooNew: The store's schema is newer than this program knows.
    """
    known = len(MIGRATIONS)
    found = version(conn)
    if found < known:
        with conn.transaction():
            # Held until this transaction ends: concurrent openers queue here, and find the
            # version moved when they get the lock.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, migrated_at DOUBLE PRECISION NOT NULL)"
            )
            found = version(conn)
            for number in range(found + 1, known + 1):
                conn.execute(MIGRATIONS[number - 1])
                conn.execute(
                    "INSERT INTO schema_version (version, migrated_at) VALUES (%s, %s)",
                    (number, time.time()),
                )
    if found > known:
        raise StoreTooNew(
            f"the store at {where} has schema version {found}, newer than this pta-broker"
            f" knows ({known}): a newer pta-broker migrated it; upgrade this one"
        )
    return known - found
