"""``broker/store/sqlite/``: a file made by an earlier version opens and gains what it lacks.

What every store promises is in ``test_contract.py``, run against SQLite too.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from broker.store import open_store
from broker.store.records import ConnectionStatus
from broker.store.sqlite.store import STORE_FILE

if TYPE_CHECKING:
    from pathlib import Path

    from broker.store.protocols import Store

KEY = bytes(range(32))


def _agent(store: Store) -> None:
    """Tenant acme, and its agent agt-a with certificate s1."""
    store.add_tenant("acme", ["example.com"])
    store.agents.add(
        agent_id="agt-a",
        tenant="acme",
        hostname="h",
        version="1",
        serial="s1",
        envelope_public_key=KEY,
        not_after=2e9,
    )


class TestOlderStores:
    """Tables made before a column existed are extended, or (for reports) remade."""

    def test_older_store_gains_the_columns(self, tmp_path: Path) -> None:
        """A certificates table without the renewal columns is extended when opened."""
        db = sqlite3.connect(tmp_path / STORE_FILE)
        db.executescript(
            "CREATE TABLE certificates (serial TEXT PRIMARY KEY, agent_id TEXT NOT NULL,"
            " envelope_public_key BLOB NOT NULL, issued_at REAL NOT NULL, not_after REAL NOT NULL);"
        )
        db.close()
        opened = open_store(tmp_path)
        try:
            _agent(opened)
            record = opened.agents.certificate("s1")
            assert record is not None
            assert record.predecessor is None
            assert not record.retired
        finally:
            opened.close()

    def test_streams_made_before_health_gain_it(self, tmp_path: Path) -> None:
        """A connections table (with broker ids) but no health column is extended when opened."""
        db = sqlite3.connect(tmp_path / STORE_FILE)
        db.executescript(
            "CREATE TABLE connections (broker_id TEXT NOT NULL, id TEXT NOT NULL,"
            " agent_id TEXT NOT NULL, version TEXT NOT NULL, serial TEXT NOT NULL,"
            " domains TEXT NOT NULL, connected_at REAL NOT NULL, last_seen REAL NOT NULL,"
            " in_flight INTEGER NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (broker_id, id));"
        )
        db.close()
        opened = open_store(tmp_path)
        try:
            _agent(opened)
            now = time.time()
            said = '{"handled":1}'
            stream = ConnectionStatus(
                "c1", "agt-a", "1", "s1", ["example.com"], now, now, 0, health=said
            )
            opened.agents.report_connections("b1", [stream])
            (agent,) = opened.agents.list(fresh_within=5)
            assert [c.health for c in agent.connections] == [said]
        finally:
            opened.close()

    def test_reports_made_before_brokers_had_ids(self, tmp_path: Path) -> None:
        """The one broker's status and streams, kept without a broker id, are remade per id."""
        db = sqlite3.connect(tmp_path / STORE_FILE)
        db.executescript(
            "CREATE TABLE broker_status (name TEXT PRIMARY KEY, value TEXT NOT NULL,"
            " updated_at REAL NOT NULL);"
            "INSERT INTO broker_status VALUES ('mfa_key', 'no', 0);"
            "CREATE TABLE connections (id TEXT PRIMARY KEY, agent_id TEXT NOT NULL,"
            " version TEXT NOT NULL, serial TEXT NOT NULL, domains TEXT NOT NULL,"
            " connected_at REAL NOT NULL, last_seen REAL NOT NULL, in_flight INTEGER NOT NULL,"
            " updated_at REAL NOT NULL);"
        )
        db.close()
        opened = open_store(tmp_path)
        try:
            _agent(opened)
            opened.report_status("b1", {"mfa_key": "yes"})
            now = time.time()
            stream = ConnectionStatus("c1", "agt-a", "1", "s1", ["example.com"], now, now, 0)
            opened.agents.report_connections("b1", [stream])
            assert opened.status(fresh_within=5) == {"b1": {"mfa_key": "yes"}}
            (agent,) = opened.agents.list(fresh_within=5)
            assert [(c.broker_id, c.connection_id) for c in agent.connections] == [("b1", "c1")]
        finally:
            opened.close()
