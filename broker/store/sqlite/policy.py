"""Where the sign-in policy's state persists: policies, counters, networks, MFA secrets.

Also each tenant's own banned passwords (:mod:`broker.policy.password_protection`), how each agent's
directories name accounts (:mod:`broker.policy.accounts`: the CLI keys users as the serving broker
does), and which accounts a directory lately said exist (their counters are never shed).
Tables in the broker's SQLite store, on the store's own connection. Every write is one
statement or one immediate transaction, so the serving broker and the CLI can both write.
Nothing about a user's password is kept here (the recent-failure hashes live in memory only),
and a TOTP secret only sealed under the operator's MFA key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from broker.policy.tenant_policy import TenantPolicy
from broker.store import rows
from broker.store.records import CounterKey, MfaRecord
from broker.store.sqlite.coordination import CoordinationTables
from broker.store.sqlite.db import transaction

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

    from broker.policy.lockout import Counter


SCHEMA = """
CREATE TABLE IF NOT EXISTS tenant_policies (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lockouts (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user TEXT NOT NULL,
    location TEXT NOT NULL,
    failures INTEGER NOT NULL,
    lockouts INTEGER NOT NULL,
    locked_until REAL NOT NULL,
    last_failure REAL NOT NULL,
    PRIMARY KEY (tenant, user, location)
);
CREATE TABLE IF NOT EXISTS familiar_networks (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user TEXT NOT NULL,
    prefix TEXT NOT NULL,
    last_success REAL NOT NULL,
    PRIMARY KEY (tenant, user, prefix)
);
CREATE TABLE IF NOT EXISTS account_rules (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    domain TEXT NOT NULL,
    directory TEXT NOT NULL,
    scope TEXT NOT NULL,
    reported_at REAL NOT NULL,
    PRIMARY KEY (tenant, agent_id, domain)
);
CREATE TABLE IF NOT EXISTS known_accounts (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user TEXT NOT NULL,
    confirmed_at REAL NOT NULL,
    PRIMARY KEY (tenant, user)
);
CREATE TABLE IF NOT EXISTS banned_passwords (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    normalised TEXT NOT NULL,
    term TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (tenant, normalised)
);
CREATE TABLE IF NOT EXISTS banned_password_revisions (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mfa_secrets (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user TEXT NOT NULL,
    sealed BLOB NOT NULL,
    last_step INTEGER NOT NULL,
    enrolled_at REAL NOT NULL,
    PRIMARY KEY (tenant, user)
);
"""


class SqlitePolicyStore(CoordinationTables):
    """The policy tables, on the connection :class:`~.store.SqliteStore` opened."""

    def __init__(self, db: sqlite3.Connection) -> None:
        """Create the tables if needed."""
        self._db = db
        db.executescript(SCHEMA)
        self._create_coordination_tables()

    # Tenant policies ---------------------------------------------------------------------------

    def tenant_policy(self, tenant: str) -> TenantPolicy:
        """A tenant's policy (the defaults when it never set one)."""
        row = self._db.execute(
            "SELECT settings FROM tenant_policies WHERE tenant = ?", (tenant,)
        ).fetchone()
        return TenantPolicy() if row is None else TenantPolicy.from_json(row[0])

    def tenant_policies(self) -> dict[str, TenantPolicy]:
        """Every tenant's policy that differs from the defaults."""
        found = self._db.execute("SELECT tenant, settings FROM tenant_policies")
        return {tenant: TenantPolicy.from_json(settings) for tenant, settings in found}

    def set_tenant_policy(self, tenant: str, policy: TenantPolicy) -> None:
        """Replace a tenant's policy."""
        self._db.execute(
            "INSERT INTO tenant_policies (tenant, settings) VALUES (?, ?)"
            " ON CONFLICT (tenant) DO UPDATE SET settings = excluded.settings",
            (tenant, policy.to_json()),
        )

    # Banned passwords ---------------------------------------------------------------------------

    def banned_terms(self, tenant: str) -> list[tuple[str, str]]:
        """A tenant's own banned terms: (as typed, normalised), in the order added."""
        found = self._db.execute(
            "SELECT term, normalised FROM banned_passwords WHERE tenant = ?"
            " ORDER BY added_at, normalised",
            (tenant,),
        )
        return [(term, normalised) for term, normalised in found]

    def banned_revisions(self) -> dict[str, int]:
        """Per tenant with a list, a number that changes whenever the list does.

        The serving broker rebuilds a tenant's index only when its revision moved.
        """
        return dict(self._db.execute("SELECT tenant, revision FROM banned_password_revisions"))

    def change_banned_terms(
        self,
        tenant: str,
        *,
        add: Sequence[tuple[str, str]] = (),
        remove: Sequence[str] = (),
        limit: int,
    ) -> tuple[int, int, int]:
        """Add (as typed, normalised) terms and remove normalised ones, in one transaction.

        Returns:
            How many were added, how many removed, how many the tenant has now.

        Raises:
            InvalidRequest: When the list would hold more than ``limit`` terms (nothing changes).
        """
        with transaction(self._db):
            removed = sum(
                self._db.execute(
                    "DELETE FROM banned_passwords WHERE tenant = ? AND normalised = ?",
                    (tenant, normalised),
                ).rowcount
                for normalised in remove
            )
            now = time.time()
            added = sum(
                self._db.execute(
                    "INSERT INTO banned_passwords (tenant, normalised, term, added_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (tenant, normalised) DO NOTHING",
                    (tenant, normalised, term, now),
                ).rowcount
                for term, normalised in add
            )
            (total,) = self._db.execute(
                "SELECT count(*) FROM banned_passwords WHERE tenant = ?", (tenant,)
            ).fetchone()
            rows.check_banned_total(tenant, total, limit)
            if added or removed:
                self._db.execute(
                    "INSERT INTO banned_password_revisions (tenant, revision) VALUES (?, 1)"
                    " ON CONFLICT (tenant) DO UPDATE SET revision = revision + 1",
                    (tenant,),
                )
        return added, removed, total

    # Lockout counters --------------------------------------------------------------------------

    def counters(self) -> dict[CounterKey, Counter]:
        """Every counter that is not clean."""
        return rows.counters(
            self._db.execute(
                "SELECT tenant, user, location, failures, lockouts, locked_until, last_failure"
                " FROM lockouts"
            )
        )

    def save_counter(self, key: CounterKey, counter: Counter) -> None:
        """Write one counter (a clean one is deleted)."""
        if counter.clean:
            self._db.execute(
                "DELETE FROM lockouts WHERE tenant = ? AND user = ? AND location = ?", key
            )
            return
        self._db.execute(
            "INSERT INTO lockouts (tenant, user, location, failures, lockouts, locked_until,"
            " last_failure) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, user, location)"
            " DO UPDATE SET failures = excluded.failures, lockouts = excluded.lockouts,"
            " locked_until = excluded.locked_until, last_failure = excluded.last_failure",
            (*key, counter.failures, counter.lockouts, counter.locked_until, counter.last_failure),
        )

    def clear_counters(self, tenant: str, user: str | None = None) -> int:
        """An administrator's unlock: one user's counters, or a whole tenant's.

        The passwords they had refused lately go too (kept here when brokers share the store).

        Returns:
            How many counters were cleared.
        """
        with transaction(self._db):
            if user is None:
                cursor = self._db.execute("DELETE FROM lockouts WHERE tenant = ?", (tenant,))
            else:
                cursor = self._db.execute(
                    "DELETE FROM lockouts WHERE tenant = ? AND user = ?", (tenant, user)
                )
            self.forget_repeats(tenant, user)
        return cursor.rowcount

    def forget_counters_before(self, horizon: float) -> None:
        """Delete counters whose last failure is older than ``horizon`` and that lock nobody."""
        self._db.execute(
            "DELETE FROM lockouts WHERE last_failure < ? AND locked_until < ?", (horizon, horizon)
        )
        # Flights nobody landed nor met for that long: their broker is long gone.
        self._db.execute("DELETE FROM flights WHERE expires_at < ?", (horizon,))

    def known_accounts(self) -> set[tuple[str, str]]:
        """(tenant, user key) of every account a directory has said exists, lately."""
        found = self._db.execute("SELECT tenant, user FROM known_accounts")
        return {(tenant, user) for tenant, user in found}

    def add_known_account(self, tenant: str, user: str, now: float) -> None:
        """Remember that a directory answered for this account (not "unknown user")."""
        self._db.execute(
            "INSERT INTO known_accounts (tenant, user, confirmed_at) VALUES (?, ?, ?)"
            " ON CONFLICT (tenant, user) DO UPDATE SET confirmed_at = excluded.confirmed_at",
            (tenant, user, now),
        )

    def forget_known_accounts_before(self, horizon: float) -> None:
        """Forget accounts confirmed before ``horizon`` that have no counter left."""
        self._db.execute(
            "DELETE FROM known_accounts WHERE confirmed_at < ? AND NOT EXISTS (SELECT 1 FROM"
            " lockouts l WHERE l.tenant = known_accounts.tenant AND l.user = known_accounts.user)",
            (horizon,),
        )

    # How agents' directories name accounts ----------------------------------------------------

    def account_rules(self) -> list[tuple[str, str, str, str, str]]:
        """(tenant, agent id, domain, directory, scope) of every agent's last hello."""
        found = self._db.execute(
            "SELECT tenant, agent_id, domain, directory, scope FROM account_rules"
            " ORDER BY tenant, agent_id, domain"
        )
        return [tuple(row) for row in found]

    def replace_account_rules(
        self, tenant: str, agent_id: str, rules: Sequence[tuple[str, str, str]]
    ) -> None:
        """Replace what an agent said, per domain: (domain, directory, scope)."""
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "DELETE FROM account_rules WHERE tenant = ? AND agent_id = ?", (tenant, agent_id)
            )
            self._db.executemany(
                "INSERT INTO account_rules (tenant, agent_id, domain, directory, scope,"
                " reported_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(tenant, agent_id, *rule, now) for rule in rules],
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Familiar networks -------------------------------------------------------------------------

    def familiar(self) -> dict[tuple[str, str], dict[str, float]]:
        """(tenant, user) -> {network prefix: last successful sign-in from it}."""
        return rows.familiar(
            self._db.execute("SELECT tenant, user, prefix, last_success FROM familiar_networks")
        )

    def save_familiar(self, tenant: str, user: str, prefix: str, last_success: float) -> None:
        """Record a successful sign-in from a network."""
        self._db.execute(
            "INSERT INTO familiar_networks (tenant, user, prefix, last_success)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (tenant, user, prefix)"
            " DO UPDATE SET last_success = excluded.last_success",
            (tenant, user, prefix, last_success),
        )

    def forget_familiar_before(self, tenant: str, horizon: float) -> None:
        """Delete a tenant's networks not signed in from since ``horizon``."""
        self._db.execute(
            "DELETE FROM familiar_networks WHERE tenant = ? AND last_success < ?",
            (tenant, horizon),
        )

    # MFA ---------------------------------------------------------------------------------------

    def mfa(self, tenant: str, user: str) -> MfaRecord | None:
        """A user's sealed TOTP secret, if one is enrolled."""
        row = self._db.execute(
            "SELECT sealed, last_step, enrolled_at FROM mfa_secrets WHERE tenant = ? AND user = ?",
            (tenant, user),
        ).fetchone()
        return None if row is None else MfaRecord(bytes(row[0]), row[1], row[2])

    def enrol_mfa(self, tenant: str, user: str, sealed: bytes, now: float) -> None:
        """Store a user's new sealed TOTP secret, replacing any earlier one."""
        self._db.execute(
            "INSERT INTO mfa_secrets (tenant, user, sealed, last_step, enrolled_at)"
            " VALUES (?, ?, ?, 0, ?) ON CONFLICT (tenant, user) DO UPDATE SET"
            " sealed = excluded.sealed, last_step = 0, enrolled_at = excluded.enrolled_at",
            (tenant, user, sealed, now),
        )

    def use_mfa_step(self, tenant: str, user: str, step: int) -> bool:
        """Spend a TOTP time step: true only if it is later than every step used before.

        One conditional UPDATE, so two brokers' (or two calls') uses of one code cannot both
        win.
        """
        cursor = self._db.execute(
            "UPDATE mfa_secrets SET last_step = ? WHERE tenant = ? AND user = ? AND last_step < ?",
            (step, tenant, user, step),
        )
        return cursor.rowcount == 1

    def remove_mfa(self, tenant: str, user: str) -> bool:
        """Remove a user's authenticator; true when there was one."""
        cursor = self._db.execute(
            "DELETE FROM mfa_secrets WHERE tenant = ? AND user = ?", (tenant, user)
        )
        return cursor.rowcount > 0

    def mfa_users(self, tenant: str) -> list[tuple[str, float]]:
        """(user, enrolled at) of every user of a tenant with an authenticator."""
        found = self._db.execute(
            "SELECT user, enrolled_at FROM mfa_secrets WHERE tenant = ? ORDER BY user", (tenant,)
        )
        return [(user, enrolled_at) for user, enrolled_at in found]
