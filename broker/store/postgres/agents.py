"""Where the shared store keeps agents: enrolments, certificates, revocations, live streams.

The rules are the SQLite store's (:mod:`broker.store.sqlite.agents` tells them): a certificate
is usable while its agent is not revoked, it has not expired and it has not been retired; at
most one renewal of a certificate can ever be used. Here several brokers renew and attach at
once, so a renewal locks the certificate it renews (``SELECT … FOR UPDATE``) for the length of
its transaction, and a retirement is one conditional ``UPDATE``. Each broker reports its own
live streams under its id; the listing merges every broker's fresh report.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from broker.store import rows
from pta.errors import Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from broker.store.postgres.db import Database
    from broker.store.records import AgentRecord, CertificateRecord, ConnectionStatus

_CERTIFICATE_SELECT = (
    "SELECT c.serial, c.agent_id, a.tenant, c.envelope_public_key, c.not_after,"
    " a.revoked_at IS NOT NULL, c.retired_at IS NOT NULL, c.predecessor, c.issued_at"
    " FROM certificates c JOIN agents a ON a.id = c.agent_id"
)


class PostgresAgentStore:
    """The agent tables, through the pool :class:`~.store.PostgresStore` opened."""

    def __init__(self, db: Database) -> None:
        """Use ``db``; the schema is there already."""
        self._db = db

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
        """Record a newly enrolled agent and its first certificate, together."""
        now = time.time()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO agents (id, tenant, hostname, version, enrolled_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (agent_id, tenant, hostname, version, now),
            )
            conn.execute(
                "INSERT INTO certificates (serial, agent_id, envelope_public_key, issued_at,"
                " not_after) VALUES (%s, %s, %s, %s, %s)",
                (serial, agent_id, envelope_public_key, now, not_after),
            )

    def renew(
        self, old: CertificateRecord, *, serial: str, envelope_public_key: bytes, not_after: float
    ) -> None:
        """Record the renewal of ``old``; an earlier renewal of it never used is retired.

        ``old`` stays locked until the new certificate is in: renewals of one certificate at
        several brokers happen one after the other, and each retires the one before.

        Raises:
            Unauthenticated: When ``old`` was retired or its agent revoked meanwhile.
        """
        now = time.time()
        with self._db.transaction() as conn:
            row = conn.execute(
                f"{_CERTIFICATE_SELECT} WHERE c.serial = %s FOR UPDATE OF c", (old.serial,)
            ).fetchone()
            current = None if row is None else rows.certificate(row)
            if current is None or (reason := current.refusal(now)):
                raise Unauthenticated(reason or "this certificate is unknown")
            conn.execute(
                "UPDATE certificates SET retired_at = %s, retired_by = %s"
                " WHERE predecessor = %s AND retired_at IS NULL",
                (now, serial, old.serial),
            )
            conn.execute(
                "INSERT INTO certificates (serial, agent_id, envelope_public_key, issued_at,"
                " not_after, predecessor) VALUES (%s, %s, %s, %s, %s, %s)",
                (serial, old.agent_id, envelope_public_key, now, not_after, old.serial),
            )

    def attached(self, record: CertificateRecord) -> None:
        """A stream of ``record`` was attached: the certificate it renewed is retired."""
        if record.predecessor is not None:
            self._db.run(
                "UPDATE certificates SET retired_at = %s, retired_by = %s"
                " WHERE serial = %s AND retired_at IS NULL",
                (time.time(), record.serial, record.predecessor),
            )

    def revoke(self, agent_id: str) -> bool:
        """Revoke an agent: none of its certificates connects or renews again.

        Returns:
            False when there is no such agent.
        """
        return (
            self._db.run(
                "UPDATE agents SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s",
                (time.time(), agent_id),
            )
            > 0
        )

    def certificate(self, serial: str) -> CertificateRecord | None:
        """Look up a certificate the broker issued, with its agent's tenant and state."""
        row = self._db.row(f"{_CERTIFICATE_SELECT} WHERE c.serial = %s", (serial,))
        return None if row is None else rows.certificate(row)

    def certificates(self, serials: Collection[str]) -> dict[str, CertificateRecord]:
        """Look up many certificates at once (every live stream's), by serial."""
        if not serials:
            return {}
        found = self._db.rows(f"{_CERTIFICATE_SELECT} WHERE c.serial = ANY(%s)", (list(serials),))
        return {record.serial: record for record in map(rows.certificate, found)}

    def report_connections(self, broker_id: str, statuses: Sequence[ConnectionStatus]) -> None:
        """Replace one broker's snapshot of its live streams (empty: it stopped)."""
        now = time.time()
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM connections WHERE broker_id = %s", (broker_id,))
            conn.cursor().executemany(
                "INSERT INTO connections (broker_id, id, agent_id, version, serial, domains,"
                " connected_at, last_seen, in_flight, updated_at, health)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        broker_id,
                        s.connection_id,
                        s.agent_id,
                        s.version,
                        s.serial,
                        list(s.domains),
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
        """List every agent with its usable certificates and every broker's fresh streams."""
        now = time.time()
        streams = [
            rows.stream(row, list(row[4]))
            for row in self._db.rows(
                "SELECT id, agent_id, version, serial, domains, connected_at, last_seen,"
                " in_flight, broker_id, health FROM connections WHERE updated_at >= %s"
                " ORDER BY connected_at, broker_id",
                (now - fresh_within,),
            )
        ]
        usable = self._db.rows(
            "SELECT agent_id, serial, not_after FROM certificates"
            " WHERE retired_at IS NULL AND not_after > %s ORDER BY issued_at, serial",
            (now,),
        )
        agents = self._db.rows(
            "SELECT id, tenant, hostname, version, enrolled_at, revoked_at FROM agents"
            " ORDER BY tenant, id"
        )
        return rows.agents(agents, usable, streams)
