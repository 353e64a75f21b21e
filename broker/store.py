"""The broker's persistent state: tenants, their verified domains, agents, certificates, tokens.

SQLite in the data directory is the embedded default. It holds no secret: tokens are stored as
hashes, and an agent is known by the public halves of its keys only. The CLI writes to the same
file while the broker serves; the broker notices through SQLite's ``data_version``.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pta.errors import InvalidRequest, NotFound, Unauthenticated
from pta.names import normalize_domain
from pta.tokens import EnrolmentToken, new_token

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

STORE_FILE = "pta.sqlite3"
_TENANT = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

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
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    envelope_public_key BLOB NOT NULL,
    issued_at REAL NOT NULL,
    not_after REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """What the broker knows about one agent certificate it issued."""

    serial: str
    agent_id: str
    tenant: str
    envelope_public_key: bytes
    not_after: float
    revoked: bool


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An enrolment token as listed to operators: never its secret, which is not kept."""

    token_id: str
    tenant: str
    created_at: float
    expires_at: float
    used_at: float | None


def check_tenant_name(name: str) -> str:
    """Check a tenant name: it appears in certificate URIs, so it is kept to DNS-label form.

    Raises:
        InvalidRequest: When it is not a lower-case DNS label.
    """
    if not _TENANT.match(name):
        raise InvalidRequest(f"tenant names are lower-case DNS labels, not {name[:64]!r}")
    return name


class Store:
    """SQLite-backed state; one instance per process, used from one thread at a time."""

    def __init__(self, data_dir: Path) -> None:
        """Open (and create) the store in ``data_dir``."""
        self._db = sqlite3.connect(
            data_dir / STORE_FILE, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        (data_dir / STORE_FILE).chmod(0o600)
        self._domains: dict[str, str] = {}
        self._domains_version = -1

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
            with self._transaction():
                self._db.execute(
                    "INSERT INTO tenants (name, created_at) VALUES (?, ?)", (name, time.time())
                )
                self._db.executemany(
                    "INSERT INTO domains (suffix, tenant) VALUES (?, ?)",
                    [(s, name) for s in suffixes],
                )
        except sqlite3.IntegrityError as error:
            raise InvalidRequest(f"tenant {name!r} or one of its domains exists already") from error

    def tenants(self) -> dict[str, list[str]]:
        """Return every tenant with its domains."""
        result: dict[str, list[str]] = {
            name: [] for (name,) in self._db.execute("SELECT name FROM tenants ORDER BY name")
        }
        for suffix, tenant in self._db.execute("SELECT suffix, tenant FROM domains ORDER BY 1"):
            result[tenant].append(suffix)
        return result

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
        rows = self._db.execute("SELECT suffix FROM domains WHERE tenant = ?", (tenant,))
        return frozenset(suffix for (suffix,) in rows)

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

    def consume_token(self, token: EnrolmentToken) -> str:
        """Use a token up and return its tenant; a token works once.

        Raises:
            Unauthenticated: When it is unknown, wrong, used or expired (one message for all,
                so a guesser learns nothing).
        """
        now = time.time()
        with self._transaction():
            row = self._db.execute(
                "SELECT tenant, secret_hash FROM tokens"
                " WHERE id = ? AND used_at IS NULL AND expires_at > ?",
                (token.token_id, now),
            ).fetchone()
            if row is None or not token.matches(row[1]):
                raise Unauthenticated("enrolment token is unknown, used or expired")
            self._db.execute("UPDATE tokens SET used_at = ? WHERE id = ?", (now, token.token_id))
        tenant: str = row[0]
        return tenant

    def list_tokens(self) -> list[TokenRecord]:
        """Return every token, newest first."""
        rows = self._db.execute(
            "SELECT id, tenant, created_at, expires_at, used_at FROM tokens"
            " ORDER BY created_at DESC"
        )
        return [TokenRecord(*row) for row in rows]

    def delete_token(self, token_id: str) -> bool:
        """Delete a token; return whether it existed."""
        cursor = self._db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        return cursor.rowcount > 0

    # Agents and their certificates ------------------------------------------------------------

    def add_agent(  # noqa: PLR0913 - one row, named columns
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
        now = time.time()
        with self._transaction():
            self._db.execute(
                "INSERT INTO agents (id, tenant, hostname, version, enrolled_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (agent_id, tenant, hostname, version, now),
            )
            self._add_certificate(agent_id, serial, envelope_public_key, not_after, now)

    def _add_certificate(
        self, agent_id: str, serial: str, envelope_public_key: bytes, not_after: float, now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO certificates (serial, agent_id, envelope_public_key, issued_at, not_after)"
            " VALUES (?, ?, ?, ?, ?)",
            (serial, agent_id, envelope_public_key, now, not_after),
        )

    def certificate(self, serial: str) -> CertificateRecord | None:
        """Look up a certificate the broker issued, with its agent's tenant and state."""
        row = self._db.execute(
            "SELECT c.serial, c.agent_id, a.tenant, c.envelope_public_key, c.not_after,"
            " a.revoked_at IS NOT NULL"
            " FROM certificates c JOIN agents a ON a.id = c.agent_id WHERE c.serial = ?",
            (serial,),
        ).fetchone()
        if row is None:
            return None
        serial, agent_id, tenant, key, not_after, revoked = row
        return CertificateRecord(serial, agent_id, tenant, key, not_after, revoked=bool(revoked))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Run the body in an immediate transaction: the CLI and the server may write at once."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
