"""Where the broker keeps its agents: enrolments, certificates, revocations, live streams.

Tables in the broker's SQLite store, on the store's own connection. An agent is known by the
public halves of its keys only. A certificate is usable while its agent is not revoked, it has
not expired and it has not been *retired*; it is retired once a renewal of it has been used
(its successor attached a stream: the agent moved on, so anything still using the old one is a
copy), or when it is renewed again before its successor was ever used (the successor is
retired: at most one renewal of a certificate can be used). So a cloned identity cannot renew
beside the real agent unnoticed: whichever of the two uses its renewal first cuts the other
off, and the other's next renewal is refused.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from broker.store import rows
from broker.store.sqlite.db import transaction
from pta.errors import Unauthenticated

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Collection, Sequence

    from broker.store.records import AgentRecord, CertificateRecord, ConnectionStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS connections (
    broker_id TEXT NOT NULL,
    id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    serial TEXT NOT NULL,
    domains TEXT NOT NULL,
    connected_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    in_flight INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (broker_id, id)
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    envelope_public_key BLOB NOT NULL,
    issued_at REAL NOT NULL,
    not_after REAL NOT NULL
);
"""
#: Columns added after the first release; a store made before gets them when opened.
CERTIFICATE_COLUMNS = {
    #: The certificate this one renewed (NULL for the one issued at enrolment).
    "predecessor": "TEXT",
    #: When it stopped being usable although unexpired, and the serial that replaced it.
    "retired_at": "REAL",
    "retired_by": "TEXT",
}

CONNECTION_COLUMNS = {
    #: The agent's last health report on the stream (JSON; empty: none yet).
    "health": "TEXT NOT NULL DEFAULT ''",
}

_CERTIFICATE_SELECT = (
    "SELECT c.serial, c.agent_id, a.tenant, c.envelope_public_key, c.not_after,"
    " a.revoked_at IS NOT NULL, c.retired_at IS NOT NULL, c.predecessor, c.issued_at"
    " FROM certificates c JOIN agents a ON a.id = c.agent_id"
)


class SqliteAgentStore:
    """The agent tables, on the connection :class:`~.store.SqliteStore` opened."""

    def __init__(self, db: sqlite3.Connection) -> None:
        """Create the tables if needed, and add the columns a store made earlier lacks."""
        self._db = db
        # A store made before streams were reported per broker: they are a second old.
        streams = {row[1] for row in db.execute("PRAGMA table_info(connections)")}
        if streams and "broker_id" not in streams:
            db.execute("DROP TABLE connections")
        db.executescript(SCHEMA)
        for table, columns in (
            ("certificates", CERTIFICATE_COLUMNS),
            ("connections", CONNECTION_COLUMNS),
        ):
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns.items():
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def add(  # noqa: PLR0913 - one row, named columns
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
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO agents (id, tenant, hostname, version, enrolled_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (agent_id, tenant, hostname, version, now),
            )
            self._insert_certificate(agent_id, serial, envelope_public_key, not_after, None)

    def renew(
        self, old: CertificateRecord, *, serial: str, envelope_public_key: bytes, not_after: float
    ) -> None:
        """Record the renewal of ``old``; an earlier renewal of it never used is retired.

        Raises:
            Unauthenticated: When ``old`` was retired or its agent revoked meanwhile.
        """
        now = time.time()
        with transaction(self._db):
            row = self._db.execute(
                f"{_CERTIFICATE_SELECT} WHERE c.serial = ?",
                (old.serial,),
            ).fetchone()
            current = None if row is None else rows.certificate(row)
            if current is None or (reason := current.refusal(now)):
                raise Unauthenticated(reason or "this certificate is unknown")
            self._db.execute(
                "UPDATE certificates SET retired_at = ?, retired_by = ?"
                " WHERE predecessor = ? AND retired_at IS NULL",
                (now, serial, old.serial),
            )
            self._insert_certificate(
                old.agent_id, serial, envelope_public_key, not_after, old.serial
            )

    def attached(self, record: CertificateRecord) -> None:
        """A stream of ``record`` was attached: the certificate it renewed is retired."""
        if record.predecessor is not None:
            self._db.execute(
                "UPDATE certificates SET retired_at = ?, retired_by = ?"
                " WHERE serial = ? AND retired_at IS NULL",
                (time.time(), record.serial, record.predecessor),
            )

    def revoke(self, agent_id: str) -> bool:
        """Revoke an agent: none of its certificates connects or renews again.

        Returns:
            False when there is no such agent.
        """
        cursor = self._db.execute(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
            (time.time(), agent_id),
        )
        return cursor.rowcount > 0

    def certificate(self, serial: str) -> CertificateRecord | None:
        """Look up a certificate the broker issued, with its agent's tenant and state."""
        row = self._db.execute(
            f"{_CERTIFICATE_SELECT} WHERE c.serial = ?",
            (serial,),
        ).fetchone()
        return None if row is None else rows.certificate(row)

    def certificates(self, serials: Collection[str]) -> dict[str, CertificateRecord]:
        """Look up many certificates at once (the live streams'), by serial; unknown ones absent."""
        found: dict[str, CertificateRecord] = {}
        wanted = sorted(set(serials))
        for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"{_CERTIFICATE_SELECT} WHERE c.serial IN ({marks})",
                chunk,
            ):
                record = rows.certificate(row)
                found[record.serial] = record
        return found

    def report_connections(self, broker_id: str, statuses: Sequence[ConnectionStatus]) -> None:
        """Replace the live-stream snapshot a broker keeps for operators (empty: it stopped)."""
        now = time.time()
        with transaction(self._db):
            self._db.execute("DELETE FROM connections WHERE broker_id = ?", (broker_id,))
            self._db.executemany(
                "INSERT INTO connections (broker_id, id, agent_id, version, serial, domains,"
                " connected_at, last_seen, in_flight, updated_at, health)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        broker_id,
                        s.connection_id,
                        s.agent_id,
                        s.version,
                        s.serial,
                        " ".join(s.domains),
                        s.connected_at,
                        s.last_seen,
                        s.in_flight,
                        now,
                        s.health,
                    )
                    for s in statuses
                ],
            )

    def list(self, *, fresh_within: float) -> list[AgentRecord]:
        """List every agent with its usable certificates and its live streams.

        Args:
            fresh_within: A stream snapshot older than this many seconds is stale (the broker
                stopped without saying so) and is not shown as connected.
        """
        now = time.time()
        streams = [
            rows.stream(row, row[4].split())
            for row in self._db.execute(
                "SELECT id, agent_id, version, serial, domains, connected_at, last_seen,"
                " in_flight, broker_id, health FROM connections WHERE updated_at >= ?"
                " ORDER BY connected_at, broker_id",
                (now - fresh_within,),
            )
        ]
        usable = self._db.execute(
            "SELECT agent_id, serial, not_after FROM certificates"
            " WHERE retired_at IS NULL AND not_after > ? ORDER BY issued_at, serial",
            (now,),
        ).fetchall()
        agents = self._db.execute(
            "SELECT id, tenant, hostname, version, enrolled_at, revoked_at FROM agents"
            " ORDER BY tenant, id"
        )
        return rows.agents(agents, usable, streams)

    def _insert_certificate(
        self,
        agent_id: str,
        serial: str,
        envelope_public_key: bytes,
        not_after: float,
        predecessor: str | None,
    ) -> None:
        self._db.execute(
            "INSERT INTO certificates (serial, agent_id, envelope_public_key, issued_at,"
            " not_after, predecessor) VALUES (?, ?, ?, ?, ?, ?)",
            (serial, agent_id, envelope_public_key, time.time(), not_after, predecessor),
        )
