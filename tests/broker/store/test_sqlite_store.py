"""``broker/store/sqlite/``: directory reports and agent certificates in a real SQLite store."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from broker.store import open_store
from broker.store.records import ReportedPolicy
from broker.store.sqlite.store import STORE_FILE
from pta.errors import Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from broker.store.protocols import Store

KEY = bytes(range(32))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store with tenants ``acme`` (two domains, two agents) and ``globex`` (one agent)."""
    opened = open_store(tmp_path)
    opened.add_tenant("acme", ["example.com", "other.example"])
    opened.add_tenant("globex", ["globex.example"])
    for agent_id, tenant in (("agt-a", "acme"), ("agt-b", "acme"), ("agt-g", "globex")):
        opened.agents.add(
            agent_id=agent_id,
            tenant=tenant,
            hostname="host",
            version="1",
            serial=f"serial-{agent_id}",
            envelope_public_key=KEY,
            not_after=0.0,
        )
    yield opened
    opened.close()


def _policy(domain: str, threshold: int, *, known: bool = True) -> ReportedPolicy:
    return ReportedPolicy(
        domain=domain, known=known, lockout_threshold=threshold, source=f"source of {domain}"
    )


class TestDirectoryPolicies:
    """Each agent's last report, per tenant."""

    def test_recorded_and_listed(self, store: Store) -> None:
        """Records come back per domain, then agent, with the tenant's only."""
        recorded = store.record_directory_policies(
            "acme", "agt-b", [_policy("other.example", 3), _policy("example.com", 5)]
        )
        store.record_directory_policies("acme", "agt-a", [_policy("example.com", 10)])
        store.record_directory_policies("globex", "agt-g", [_policy("globex.example", 1)])
        listed = store.directory_policies("acme")
        assert [(r.domain, r.agent_id, r.lockout_threshold) for r in listed] == [
            ("example.com", "agt-a", 10),
            ("example.com", "agt-b", 5),
            ("other.example", "agt-b", 3),
        ]
        assert {r.source for r in recorded} == {"source of other.example", "source of example.com"}
        assert all(r.tenant == "acme" and r.known and r.reported_at > 0 for r in listed)

    def test_a_report_replaces_the_agents_last(self, store: Store) -> None:
        """A domain the agent no longer reports is forgotten; other agents' rows stay."""
        store.record_directory_policies(
            "acme", "agt-a", [_policy("example.com", 5), _policy("other.example", 5)]
        )
        store.record_directory_policies("acme", "agt-b", [_policy("example.com", 7)])
        store.record_directory_policies("acme", "agt-a", [_policy("example.com", 4)])
        listed = store.directory_policies("acme")
        assert [(r.domain, r.agent_id, r.lockout_threshold) for r in listed] == [
            ("example.com", "agt-a", 4),
            ("example.com", "agt-b", 7),
        ]

    def test_unknown_policy_has_no_threshold(self, store: Store) -> None:
        """An unknown policy is kept as unknown with threshold 0, whatever was sent."""
        store.record_directory_policies("acme", "agt-a", [_policy("example.com", 9, known=False)])
        (record,) = store.directory_policies("acme")
        assert (record.known, record.lockout_threshold) == (False, 0)

    def test_survives_reopening(self, store: Store, tmp_path: Path) -> None:
        """Reports are persistent, like the rest of the store."""
        store.record_directory_policies("acme", "agt-a", [_policy("example.com", 5)])
        again = open_store(tmp_path)
        try:
            assert [r.lockout_threshold for r in again.directory_policies("acme")] == [5]
        finally:
            again.close()


class TestCertificates:
    """Renewal once, retirement, and a store made before those columns existed."""

    def test_renewal_retires_unused_successor_then_attach_retires_original(
        self, store: Store
    ) -> None:
        """Renew twice: the first renewal is retired; attach the second: the original is."""
        store.agents.add(
            agent_id="agt-r",
            tenant="acme",
            hostname="h",
            version="1",
            serial="serial-agt-r",
            envelope_public_key=KEY,
            not_after=2e9,
        )
        original = store.agents.certificate("serial-agt-r")
        assert original is not None
        store.agents.renew(original, serial="r1", envelope_public_key=KEY, not_after=2e9)
        store.agents.renew(original, serial="r2", envelope_public_key=KEY, not_after=2e9)
        first, second = store.agents.certificate("r1"), store.agents.certificate("r2")
        assert first is not None
        assert first.retired
        assert second is not None
        assert not second.retired
        assert second.predecessor == "serial-agt-r"
        store.agents.attached(second)
        again = store.agents.certificate("serial-agt-r")
        assert again is not None
        assert again.retired
        assert "replaced" in again.refusal(0.0)
        with pytest.raises(Unauthenticated, match="replaced"):
            store.agents.renew(again, serial="r3", envelope_public_key=KEY, not_after=2e9)

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
            opened.add_tenant("acme", ["example.com"])
            opened.agents.add(
                agent_id="agt-a",
                tenant="acme",
                hostname="h",
                version="1",
                serial="s1",
                envelope_public_key=KEY,
                not_after=2e9,
            )
            record = opened.agents.certificate("s1")
            assert record is not None
            assert record.predecessor is None
            assert not record.retired
        finally:
            opened.close()
