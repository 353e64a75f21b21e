"""This broker's place in its cluster: its heartbeat in the store, and the brokers agents are told.

With a shared store every broker registers itself when it starts serving (where agents dial it,
where clients do), refreshes that every :data:`HEARTBEAT_INTERVAL`, and deregisters when it
stops cleanly; one that is killed falls out once its heartbeat is :data:`STALE_AFTER` old. Every
:data:`TICK` it reads the fresh brokers: their agent endpoints are what its Welcome says and,
when they change, what it pushes down every attached stream, so that each agent keeps one
stream to every broker (``agent/mesh.py``). A store that cannot be reached
(:class:`~pta.errors.StoreUnavailable`) costs nothing but freshness: the broker serves on with
the set it knew and tries again at the next tick; once it answers again, brokers are only
added to the set for :data:`STALE_AFTER` (every heartbeat in the store is old by then: the
others must write theirs again before any of them counts as gone).

A broker on a store of its own (SQLite) is alone: nothing here runs, and its Welcome names no
cluster, so its agents keep the one stream they had.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING

import structlog

from broker.dispatch.jobs import Brokers
from broker.store.records import BrokerRecord
from pta.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from broker.config import BrokerConfig
    from broker.dispatch.dispatcher import Dispatcher
    from broker.store.protocols import ClusterStore, Store

log = structlog.get_logger()

#: How often a broker says it is up.
HEARTBEAT_INTERVAL = 1.0
#: A broker whose heartbeat is older than this is gone (killed, frozen, cut off from the
#: store): five missed heartbeats, so that a busy second or a slow store call does not count.
STALE_AFTER = 5.0
#: How often the set of brokers is read: a change reaches the agents within a tick or so.
TICK = 0.25
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - recognised, not bound


def dialable(listen: str, port: int, *, given: str = "", names: Sequence[str] = ()) -> str:
    """Where others reach an endpoint bound to ``listen`` on ``port`` (``host:port``).

    ``given`` (``--agent-endpoint``) wins. A wildcard address names no host anyone can dial:
    the first of ``names`` (the certificate's ``--san``) stands in, else this host's name.
    """
    if given:
        return given
    host = listen.rpartition(":")[0]
    if host in _WILDCARDS:
        host = names[0] if names else socket.getfqdn()
    return f"{host}:{port}"


def membership(
    store: Store, config: BrokerConfig, broker_id: str, *, public_port: int, agent_port: int
) -> Membership | None:
    """The serving broker's membership of its store's cluster; None on a store of its own."""
    if not store.shared:
        return None
    names = config.san
    return Membership(
        store,
        broker_id=broker_id,
        agent_endpoint=dialable(
            config.agent_listen, agent_port, given=config.agent_endpoint, names=names
        ),
        public_endpoint=dialable(config.listen, public_port, names=names),
    )


def announcer(dispatcher: Dispatcher) -> Callable[[tuple[str, ...]], None]:
    """What tells every attached agent the cluster's brokers (queued behind its work)."""

    def announce(endpoints: tuple[str, ...]) -> None:
        for conn in dispatcher.connections():
            conn.outbox.put_nowait(Brokers(endpoints))

    return announce


class Membership:
    """One broker's entry in the store's list of brokers, and the cluster's agent endpoints."""

    def __init__(
        self,
        store: ClusterStore,
        *,
        broker_id: str,
        agent_endpoint: str,
        public_endpoint: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare; nothing is written until :meth:`join`."""
        self._store = store
        self._clock = clock
        self._id = broker_id
        self._agent_endpoint = agent_endpoint
        self._public_endpoint = public_endpoint
        self._started_at = clock()
        self._beaten = 0.0
        self._unavailable = False
        #: Until then, brokers are only added to the set: after an outage of the store every
        #: heartbeat in it is old, and the others need a moment to write theirs again.
        self._only_add_until = 0.0
        #: The agent endpoints of every fresh broker, this one's included, sorted.
        self.endpoints: tuple[str, ...] = (agent_endpoint,)

    def join(self) -> None:
        """Register and read the set once, so the first Welcome already names the cluster.

        A store that does not answer now is not fatal: :meth:`run` keeps trying.
        """
        self._tick()

    async def run(self, announce: Callable[[tuple[str, ...]], None]) -> None:
        """Heartbeat and read the set every tick until cancelled; ``announce`` each change."""
        while True:
            await asyncio.sleep(TICK)
            before = self.endpoints
            self._tick()
            if self.endpoints != before:
                log.info("cluster.brokers_changed", brokers=list(self.endpoints))
                announce(self.endpoints)

    def leave(self) -> None:
        """Deregister (a clean stop): the others tell their agents at their next tick."""
        try:
            self._store.deregister_broker(self._id)
        except StoreUnavailable as error:  # Its heartbeat goes stale by itself.
            log.warning("cluster.deregister_failed", reason=error.detail)

    def _tick(self) -> None:
        now = self._clock()
        try:
            if now - self._beaten >= HEARTBEAT_INTERVAL:
                self._store.register_broker(
                    BrokerRecord(
                        broker_id=self._id,
                        agent_endpoint=self._agent_endpoint,
                        public_endpoint=self._public_endpoint,
                        started_at=self._started_at,
                        heartbeat_at=now,
                    )
                )
                self._beaten = now
            fresh = self._store.brokers(fresh_within=STALE_AFTER)
        except StoreUnavailable as error:
            if not self._unavailable:  # Once per outage; the set known stands meanwhile.
                self._unavailable = True
                log.warning("cluster.store_unavailable", reason=error.detail)
            return
        if self._unavailable:
            self._unavailable = False
            self._only_add_until = now + STALE_AFTER
        # This broker serves, whatever the store says of it (a heartbeat write that failed):
        # its agents must not drop the stream they hold to it.
        found = {b.agent_endpoint for b in fresh} | {self._agent_endpoint}
        if now < self._only_add_until:
            found |= set(self.endpoints)
        self.endpoints = tuple(sorted(found))
