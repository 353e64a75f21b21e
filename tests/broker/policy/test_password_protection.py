"""``broker/policy/password_protection.py``: per-tenant lists in a real SQLite store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from broker.policy.banned_passwords import BannedList
from broker.policy.password_protection import (
    MAX_TENANT_TERMS,
    TOO_GUESSABLE,
    TOO_SHORT,
    PasswordProtection,
)
from broker.store import open_store
from pta.errors import InvalidRequest
from pta.names import parse_upn
from pta.v1 import outcome_pb2
from tooling import common_passwords

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from broker.store.protocols import Store

Outcome = outcome_pb2.Outcome
GLOBAL = BannedList.build(["password", "qwerty"])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store with tenants ``acme`` and ``globex``."""
    opened = open_store(tmp_path)
    opened.add_tenant("acme", ["acme.example"])
    opened.add_tenant("globex", ["globex.example"])
    yield opened
    opened.close()


def _refusal(protection: PasswordProtection, tenant: str, user: str, new: str) -> str | None:
    verdict = protection.refusal(tenant, parse_upn(user), new)
    if verdict is None:
        return None
    assert (verdict.outcome, verdict.decided_by) == (Outcome.PASSWORD_REJECTED, "banned_password")
    return verdict.message


class TestPasswordProtection:
    """The lists a serving broker holds, and what the user is told."""

    def test_global_list_and_names(self, store: Store) -> None:
        """The global list and the user's and tenant's names count for everyone."""
        protection = PasswordProtection(store.policy, GLOBAL)
        assert _refusal(protection, "acme", "bob@acme.example", "Qwerty!12") == TOO_GUESSABLE
        assert _refusal(protection, "acme", "bob@acme.example", "AcmeAcme1") == TOO_GUESSABLE
        assert _refusal(protection, "acme", "dana.smith@acme.example", "Smith#42") == TOO_GUESSABLE
        assert _refusal(protection, "acme", "bob@acme.example", "Ab1!") == TOO_SHORT
        assert _refusal(protection, "acme", "bob@acme.example", "Kq7#vLm2") is None

    def test_tenant_terms_apply_after_reload(self, store: Store) -> None:
        """A term added to the store applies to its tenant at the next reload, and only there."""
        protection = PasswordProtection(store.policy, GLOBAL)
        assert _refusal(protection, "acme", "bob@acme.example", "Gizmotron7!") is None
        store.policy.change_banned_terms("acme", add=[("Gizm0tron", "gizmotron")], limit=10)
        protection.reload()
        assert _refusal(protection, "acme", "bob@acme.example", "Gizmotron7!") == TOO_GUESSABLE
        assert _refusal(protection, "globex", "bob@globex.example", "Gizmotron7!") is None
        store.policy.change_banned_terms("acme", remove=["gizmotron"], limit=10)
        protection.reload()
        assert _refusal(protection, "acme", "bob@acme.example", "Gizmotron7!") is None

    def test_message_names_no_term(self, store: Store) -> None:
        """The user learns why in words, never which list or which term."""
        store.policy.change_banned_terms("acme", add=[("gizmotron", "gizmotron")], limit=10)
        protection = PasswordProtection(store.policy, GLOBAL)
        message = _refusal(protection, "acme", "bob@acme.example", "gizmotron1")
        assert message == TOO_GUESSABLE
        assert "gizmotron" not in message
        assert "list" not in message

    def test_reload_rebuilds_only_changed_tenants(self, store: Store) -> None:
        """An unchanged tenant's index is kept: a reload costs nothing when nothing changed."""
        store.policy.change_banned_terms("acme", add=[("gizmotron", "gizmotron")], limit=10)
        protection = PasswordProtection(store.policy, GLOBAL)
        held = protection._tenants["acme"][1]
        store.policy.change_banned_terms("globex", add=[("sprocket", "sprocket")], limit=10)
        protection.reload()
        assert protection._tenants["acme"][1] is held
        assert "globex" in protection._tenants


class TestBannedTable:
    """``PolicyStore.change_banned_terms`` and its limit."""

    def test_add_remove_count(self, store: Store) -> None:
        """Adding a term twice adds it once; the counts say what changed."""
        policy = store.policy
        assert policy.change_banned_terms("acme", add=[("Contoso", "contoso")], limit=5) == (
            1,
            0,
            1,
        )
        assert policy.change_banned_terms(
            "acme", add=[("c0ntoso", "contoso"), ("widget", "wldget")], limit=5
        ) == (1, 0, 2)
        assert policy.change_banned_terms("acme", remove=["contoso", "nothere"], limit=5) == (
            0,
            1,
            1,
        )
        assert policy.banned_terms("acme") == [("widget", "wldget")]

    def test_limit_changes_nothing(self, store: Store) -> None:
        """Past the limit the whole change is refused and the list stays as it was."""
        policy = store.policy
        policy.change_banned_terms("acme", add=[("alpha", "alpha")], limit=2)
        revision = policy.banned_revisions()["acme"]
        with pytest.raises(InvalidRequest, match="at most 2"):
            policy.change_banned_terms(
                "acme", add=[("bravo", "brava"), ("delta", "delta")], limit=2
            )
        assert policy.banned_terms("acme") == [("alpha", "alpha")]
        assert policy.banned_revisions()["acme"] == revision

    def test_default_limit(self) -> None:
        """Entra allows 1,000 terms; pta more, as they cost only memory."""
        assert MAX_TENANT_TERMS == 5000


class TestShippedList:
    """``broker/policy/data/common_passwords.txt`` is zxcvbn's list, as the tooling writes it."""

    def test_committed_list_is_current(self) -> None:
        """The committed file equals a fresh run of ``python -m tooling.common_passwords``."""
        assert common_passwords.OUT.read_text(encoding="utf-8") == common_passwords.generate(), (
            "run `python -m tooling.common_passwords`"
        )
