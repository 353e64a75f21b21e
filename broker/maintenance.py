"""A serving broker's upkeep, every tick: what operators changed, revocations, reports.

The CLI and the AdminService write the same store the broker reads: a revocation recorded
anywhere cuts the agent's streams here within a tick (so does an expiry), a policy change or
an unlock applies as fast; and once a second the broker reports its live streams (with each
agent's health) and whether it holds an MFA key, for ``pta-broker agents list`` and friends.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from broker.store.records import ConnectionStatus
from broker.trust import agent_access
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.dispatch.dispatcher import Dispatcher
    from broker.dispatch.jobs import Connection
    from broker.policy.signin_policy import SignInPolicy
    from broker.store.protocols import Store

log = structlog.get_logger()
#: How often the broker re-checks every live agent stream's certificate (revoked, expired,
#: retired) and looks for changes made through the CLI.
MAINTENANCE_TICK = 0.25
#: How often it reports its live streams for ``pta-broker agents list``.
STATUS_INTERVAL = 1.0
#: How often the sign-in policy forgets stale counters and networks and rotates keys.
POLICY_UPKEEP_INTERVAL = 60.0


async def maintain(  # noqa: PLR0913 - what one broker's upkeep works on, by name
    store: Store,
    dispatcher: Dispatcher,
    policy: SignInPolicy,
    *,
    broker_id: str,
    store_shown: str,
    every_second: Callable[[], None],
) -> None:
    """Apply what operators change through the CLI, and report live streams to them.

    The CLI is another process writing the same store: a revocation it records cuts the
    agent's streams here within one tick (so does an expiry), and a policy change or an
    unlock applies as fast.
    """
    reported = upkept = 0.0
    unavailable = False
    while True:
        await asyncio.sleep(MAINTENANCE_TICK)
        try:
            if time.monotonic() - upkept >= POLICY_UPKEEP_INTERVAL:
                upkept = time.monotonic()
                policy.upkeep()
            if store.changed():
                policy.reload()
            # Every tick, whatever the store says changed: a revocation, an expiry or a
            # retirement reaches every live stream within a tick.
            agent_access.recheck(store.agents, dispatcher)
            if time.monotonic() - reported >= STATUS_INTERVAL:
                reported = time.monotonic()
                every_second()
                store.agents.report_connections(
                    broker_id, [_status(c) for c in dispatcher.connections()]
                )
                store.report_status(broker_id, {"mfa_key": "yes" if policy.mfa_ready else "no"})
            if unavailable:
                unavailable = False
                log.info("broker.store_available", store=store_shown)
        except StoreUnavailable as error:
            # Said once per outage, not at every tick; every call answers UNAVAILABLE.
            if not unavailable:
                unavailable = True
                log.warning("broker.store_unavailable", reason=error.detail)
        except Exception:
            log.exception("broker.maintenance_failed")


def _status(conn: Connection) -> ConnectionStatus:
    return ConnectionStatus(
        connection_id=conn.connection_id,
        agent_id=conn.agent_id,
        version=conn.version,
        serial=conn.serial,
        domains=sorted(conn.domains),
        connected_at=conn.connected_at,
        last_seen=conn.last_seen,
        in_flight=len(conn.in_flight),
        health=conn.health,
    )
