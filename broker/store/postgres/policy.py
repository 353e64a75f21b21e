"""Where the shared store keeps the sign-in policy's state: policies, counters, networks, MFA.

What is kept and why is the SQLite store's (:mod:`broker.store.sqlite.policy`); nothing about
a password, a TOTP secret only sealed. The column for a user is ``user_key`` (``user`` is a
reserved word in PostgreSQL). The sign-in path writes here (counters, familiar networks,
known accounts, TOTP steps), so each of those is one autocommit statement: an upsert, a
delete, or a conditional update that is atomic on its own. The writes that must be all or
nothing across several statements (a tenant's banned terms under their limit, an agent's
account rules) are transactions, the banned terms serialised per tenant by a row lock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from broker.policy.tenant_policy import TenantPolicy
from broker.store import rows
from broker.store.postgres.coordination import CoordinationTables
from broker.store.postgres.db import lock_pair
from broker.store.postgres.user_batches import UserBatches
from broker.store.records import CounterKey, MfaRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

    from broker.policy.lockout import Counter
    from broker.store.postgres.db import Database


class PostgresPolicyStore(CoordinationTables):
    """The policy tables, through the pool :class:`~.store.PostgresStore` opened."""

    def __init__(self, db: Database) -> None:
        """Use ``db``; the schema is there already."""
        self._db = db
        self.batches = UserBatches(db)

    def close(self) -> None:
        """Let the thread of lockout decisions end once what it holds is decided."""
        self.batches.close()

    # Tenant policies ---------------------------------------------------------------------------

    def tenant_policy(self, tenant: str) -> TenantPolicy:
        """A tenant's policy (the defaults when it never set one)."""
        row = self._db.row("SELECT settings FROM tenant_policies WHERE tenant = %s", (tenant,))
        return TenantPolicy() if row is None else TenantPolicy.from_json(row[0])

    def tenant_policies(self) -> dict[str, TenantPolicy]:
        """Every tenant's policy that differs from the defaults."""
        found = self._db.rows("SELECT tenant, settings FROM tenant_policies")
        return {tenant: TenantPolicy.from_json(settings) for tenant, settings in found}

    def set_tenant_policy(self, tenant: str, policy: TenantPolicy) -> None:
        """Replace a tenant's policy."""
        self._db.run(
            "INSERT INTO tenant_policies (tenant, settings) VALUES (%s, %s)"
            " ON CONFLICT (tenant) DO UPDATE SET settings = excluded.settings",
            (tenant, policy.to_json()),
        )

    # Banned passwords ---------------------------------------------------------------------------

    def banned_terms(self, tenant: str) -> list[tuple[str, str]]:
        """A tenant's own banned terms: (as typed, normalised), in the order added."""
        found = self._db.rows(
            "SELECT term, normalised FROM banned_passwords WHERE tenant = %s"
            " ORDER BY added_at, normalised",
            (tenant,),
        )
        return [(term, normalised) for term, normalised in found]

    def banned_revisions(self) -> dict[str, int]:
        """Per tenant with a list, a number that changes whenever the list does."""
        return dict(self._db.rows("SELECT tenant, revision FROM banned_password_revisions"))

    def change_banned_terms(
        self,
        tenant: str,
        *,
        add: Sequence[tuple[str, str]] = (),
        remove: Sequence[str] = (),
        limit: int,
    ) -> tuple[int, int, int]:
        """Add (as typed, normalised) terms and remove normalised ones, in one transaction.

        The tenant's row is locked first, so two changes of one tenant's list run one after
        the other and the second counts what the first committed: racing changes cannot
        together pass the limit.

        Returns:
            How many were added, how many removed, how many the tenant has now.

        Raises:
            InvalidRequest: When the list would hold more than ``limit`` terms (nothing changes).
        """
        now = time.time()
        with self._db.transaction() as conn:
            # NO KEY UPDATE: the counters' foreign-key checks on the tenant are not blocked.
            conn.execute("SELECT 1 FROM tenants WHERE name = %s FOR NO KEY UPDATE", (tenant,))
            removed = conn.execute(
                "DELETE FROM banned_passwords WHERE tenant = %s AND normalised = ANY(%s)",
                (tenant, list(remove)),
            ).rowcount
            added = conn.execute(
                "INSERT INTO banned_passwords (tenant, normalised, term, added_at)"
                " SELECT %s, normalised, term, %s FROM unnest(%s::text[], %s::text[])"
                " AS given (normalised, term) ON CONFLICT (tenant, normalised) DO NOTHING",
                (tenant, now, [n for _, n in add], [t for t, _ in add]),
            ).rowcount
            counted = conn.execute(
                "SELECT count(*) FROM banned_passwords WHERE tenant = %s", (tenant,)
            ).fetchone()
            total = int(counted[0]) if counted else 0
            rows.check_banned_total(tenant, total, limit)
            if added or removed:
                conn.execute(
                    "INSERT INTO banned_password_revisions (tenant, revision) VALUES (%s, 1)"
                    " ON CONFLICT (tenant) DO UPDATE"
                    " SET revision = banned_password_revisions.revision + 1",
                    (tenant,),
                )
        return added, removed, total

    # Lockout counters --------------------------------------------------------------------------

    def counters(self) -> dict[CounterKey, Counter]:
        """Every counter that is not clean."""
        return rows.counters(
            self._db.rows(
                "SELECT tenant, user_key, location, failures, lockouts, locked_until,"
                " last_failure FROM lockouts"
            )
        )

    def save_counter(self, key: CounterKey, counter: Counter) -> None:
        """Write one counter (a clean one is deleted): one statement either way."""
        if counter.clean:
            self._db.run(
                "DELETE FROM lockouts WHERE tenant = %s AND user_key = %s AND location = %s", key
            )
            return
        self._db.run(
            "INSERT INTO lockouts (tenant, user_key, location, failures, lockouts, locked_until,"
            " last_failure) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant, user_key, location)"
            " DO UPDATE SET failures = excluded.failures, lockouts = excluded.lockouts,"
            " locked_until = excluded.locked_until, last_failure = excluded.last_failure",
            (*key, counter.failures, counter.lockouts, counter.locked_until, counter.last_failure),
        )

    def clear_counters(self, tenant: str, user: str | None = None) -> int:
        """An administrator's unlock: one user's counters, or a whole tenant's.

        The ``changes`` counter moves in the same statement when anything was cleared, so
        every broker reloads its counters at its next tick.

        Returns:
            How many counters were cleared.
        """
        row = self._db.row(
            "WITH cleared AS (DELETE FROM lockouts WHERE tenant = %s"
            " AND (%s::text IS NULL OR user_key = %s) RETURNING 1),"
            " forgotten AS (DELETE FROM repeats WHERE tenant = %s"
            " AND (%s::text IS NULL OR user_key = %s)),"
            " bumped AS (UPDATE changes SET counter = counter + 1"
            " WHERE EXISTS (SELECT 1 FROM cleared))"
            " SELECT count(*) FROM cleared",
            (tenant, user, user, tenant, user, user),
        )
        return int(row[0]) if row else 0

    def forget_counters_before(self, horizon: float) -> None:
        """Delete counters whose last failure is older than ``horizon`` and that lock nobody."""
        self._db.run(
            "DELETE FROM lockouts WHERE last_failure < %s AND locked_until < %s",
            (horizon, horizon),
        )
        # Flights nobody landed nor met for that long: their broker is long gone.
        self._db.run("DELETE FROM flights WHERE expires_at < %s", (horizon,))

    def known_accounts(self) -> set[tuple[str, str]]:
        """(tenant, user key) of every account a directory has said exists, lately."""
        found = self._db.rows("SELECT tenant, user_key FROM known_accounts")
        return {(tenant, user) for tenant, user in found}

    def add_known_account(self, tenant: str, user: str, now: float) -> None:
        """Remember that a directory answered for this account (not "unknown user")."""
        self._db.run(
            "INSERT INTO known_accounts (tenant, user_key, confirmed_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (tenant, user_key) DO UPDATE SET confirmed_at = excluded.confirmed_at",
            (tenant, user, now),
        )

    def forget_known_accounts_before(self, horizon: float) -> None:
        """Forget accounts confirmed before ``horizon`` that have no counter left."""
        self._db.run(
            "DELETE FROM known_accounts k WHERE confirmed_at < %s AND NOT EXISTS (SELECT 1 FROM"
            " lockouts l WHERE l.tenant = k.tenant AND l.user_key = k.user_key)",
            (horizon,),
        )

    # How agents' directories name accounts ----------------------------------------------------

    def account_rules(self) -> list[tuple[str, str, str, str, str]]:
        """(tenant, agent id, domain, directory, scope) of every agent's last hello."""
        found = self._db.rows(
            "SELECT tenant, agent_id, domain, directory, scope FROM account_rules"
            " ORDER BY tenant, agent_id, domain"
        )
        return [(row[0], row[1], row[2], row[3], row[4]) for row in found]

    def replace_account_rules(
        self, tenant: str, agent_id: str, rules: Sequence[tuple[str, str, str]]
    ) -> None:
        """Replace what an agent said, per domain: (domain, directory, scope)."""
        now = time.time()
        with self._db.transaction() as conn:
            lock_pair(conn, tenant, agent_id)  # The agent says it at every broker at once.
            conn.execute(
                "DELETE FROM account_rules WHERE tenant = %s AND agent_id = %s", (tenant, agent_id)
            )
            conn.cursor().executemany(
                "INSERT INTO account_rules (tenant, agent_id, domain, directory, scope,"
                " reported_at) VALUES (%s, %s, %s, %s, %s, %s)",
                [(tenant, agent_id, *rule, now) for rule in rules],
            )

    # Familiar networks -------------------------------------------------------------------------

    def familiar(self) -> dict[tuple[str, str], dict[str, float]]:
        """(tenant, user) -> {network prefix: last successful sign-in from it}."""
        return rows.familiar(
            self._db.rows("SELECT tenant, user_key, prefix, last_success FROM familiar_networks")
        )

    def save_familiar(self, tenant: str, user: str, prefix: str, last_success: float) -> None:
        """Record a successful sign-in from a network."""
        self._db.run(
            "INSERT INTO familiar_networks (tenant, user_key, prefix, last_success)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, user_key, prefix)"
            " DO UPDATE SET last_success = excluded.last_success",
            (tenant, user, prefix, last_success),
        )

    def forget_familiar_before(self, tenant: str, horizon: float) -> None:
        """Delete a tenant's networks not signed in from since ``horizon``."""
        self._db.run(
            "DELETE FROM familiar_networks WHERE tenant = %s AND last_success < %s",
            (tenant, horizon),
        )

    # MFA ---------------------------------------------------------------------------------------

    def mfa(self, tenant: str, user: str) -> MfaRecord | None:
        """A user's sealed TOTP secret, if one is enrolled."""
        row = self._db.row(
            "SELECT sealed, last_step, enrolled_at FROM mfa_secrets"
            " WHERE tenant = %s AND user_key = %s",
            (tenant, user),
        )
        return None if row is None else MfaRecord(bytes(row[0]), row[1], row[2])

    def enrol_mfa(self, tenant: str, user: str, sealed: bytes, now: float) -> None:
        """Store a user's new sealed TOTP secret, replacing any earlier one."""
        self._db.run(
            "INSERT INTO mfa_secrets (tenant, user_key, sealed, last_step, enrolled_at)"
            " VALUES (%s, %s, %s, 0, %s) ON CONFLICT (tenant, user_key) DO UPDATE SET"
            " sealed = excluded.sealed, last_step = 0, enrolled_at = excluded.enrolled_at",
            (tenant, user, sealed, now),
        )

    def use_mfa_step(self, tenant: str, user: str, step: int) -> bool:
        """Spend a TOTP time step: true only if it is later than every step used before.

        One conditional UPDATE: a racing one waits for the row lock, then re-reads the row
        and finds the step spent.
        """
        return (
            self._db.run(
                "UPDATE mfa_secrets SET last_step = %s"
                " WHERE tenant = %s AND user_key = %s AND last_step < %s",
                (step, tenant, user, step),
            )
            == 1
        )

    def remove_mfa(self, tenant: str, user: str) -> bool:
        """Remove a user's authenticator; true when there was one."""
        return (
            self._db.run(
                "DELETE FROM mfa_secrets WHERE tenant = %s AND user_key = %s", (tenant, user)
            )
            > 0
        )

    def mfa_users(self, tenant: str) -> list[tuple[str, float]]:
        """(user, enrolled at) of every user of a tenant with an authenticator."""
        found = self._db.rows(
            "SELECT user_key, enrolled_at FROM mfa_secrets WHERE tenant = %s ORDER BY user_key",
            (tenant,),
        )
        return [(user, enrolled_at) for user, enrolled_at in found]
