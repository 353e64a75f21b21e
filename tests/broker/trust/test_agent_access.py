"""``broker/trust/agent_access.py``: stream slots per agent and per tenant (pure counting)."""

from __future__ import annotations

import contextlib

import pytest

from broker.store.records import CertificateRecord
from broker.trust.agent_access import StreamSlots
from pta.errors import Overloaded


def _record(agent_id: str, tenant: str = "acme") -> CertificateRecord:
    return CertificateRecord(
        serial=f"s-{agent_id}",
        agent_id=agent_id,
        tenant=tenant,
        envelope_public_key=b"k" * 32,
        not_after=2e9,
        revoked=False,
    )


class TestStreamSlots:
    """Slots are taken synchronously, counted per agent and per tenant, and given back."""

    def test_agent_cap(self) -> None:
        """The fifth stream of one agent is refused while four are held."""
        slots = StreamSlots(per_agent=4, per_tenant=100)
        with contextlib.ExitStack() as held:
            for _ in range(4):
                held.enter_context(slots.reserve(_record("a")))
            with pytest.raises(Overloaded, match="this agent"), slots.reserve(_record("a")):
                pass
            with slots.reserve(_record("b")):  # Another agent of the tenant is not affected.
                assert slots.held("b") == 1
        assert slots.held("a") == 0

    def test_tenant_cap(self) -> None:
        """Many agents of one tenant together stop at the tenant's cap; other tenants go on."""
        slots = StreamSlots(per_agent=4, per_tenant=6)
        with contextlib.ExitStack() as held:
            for i in range(6):
                held.enter_context(slots.reserve(_record(f"a{i}")))
            with pytest.raises(Overloaded, match="organisation"), slots.reserve(_record("a9")):
                pass
            with slots.reserve(_record("g", tenant="globex")):
                pass
        with slots.reserve(_record("a9")):  # Everything was given back.
            pass

    def test_slot_returned_when_the_body_fails(self) -> None:
        """A stream refused after its slot was taken (a bad hello) gives the slot back."""
        slots = StreamSlots(per_agent=1, per_tenant=1)
        with contextlib.suppress(ValueError), slots.reserve(_record("a")):
            raise ValueError
        with slots.reserve(_record("a")):
            assert slots.held("a") == 1
